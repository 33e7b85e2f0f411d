//! Model-dependent transforms, applied to a model's float32 input.
//!
//! A transform is fitted on the training split (in Python, from the float32 values a
//! model sees) and stored with the training snapshot; what reaches this module is the
//! fitted form: a step per feature column, in order. The same function turns the
//! training rows and the served rows into model input, so both give the same bits:
//! each value is widened to f64, transformed, and rounded once to f32. NaN is the
//! missing value of a float32 input: every step but `FillNull` keeps it NaN.
//!
//! Cost: one pass over the touched columns, O(rows × steps) (`Bucketize`: a binary
//! search over its edges), no allocation.

pub mod categories;

use crate::error::{Error, Result};

/// One fitted step.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// `(x - center) / scale`: standard (mean, std), min-max (min, max - min) and
    /// robust (median, IQR) scalers. A zero or non-finite scale divides by 1.
    Scale { center: f64, scale: f64 },
    /// `ln(1 + x)` (NaN below -1, as numpy).
    Log1p,
    /// `x` limited to `[lo, hi]` (±inf for no bound).
    Clip { lo: f64, hi: f64 },
    /// The number of edges `<= x` (numpy's `digitize(x, edges)`): 0 below the first
    /// edge, `edges.len()` at or above the last.
    Bucketize { edges: Vec<f64> },
    /// `value` where `x` is missing (NaN).
    FillNull { value: f64 },
}

impl Step {
    #[inline]
    pub fn apply(&self, x: f32) -> f32 {
        let v = f64::from(x);
        if x.is_nan() {
            return match self {
                Step::FillNull { value } => *value as f32,
                _ => f32::NAN,
            };
        }
        let y = match self {
            Step::Scale { center, scale } => {
                let s = if *scale == 0.0 || !scale.is_finite() {
                    1.0
                } else {
                    *scale
                };
                (v - center) / s
            }
            Step::Log1p => v.ln_1p(),
            Step::Clip { lo, hi } => v.max(*lo).min(*hi),
            Step::Bucketize { edges } => edges.partition_point(|&e| e <= v) as f64,
            Step::FillNull { .. } => v,
        };
        y as f32
    }

    /// Checks a step's parameters (before any value is touched).
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidArgument(what));
        match self {
            Step::Scale { center, .. } if !center.is_finite() => bad(format!(
                "a scaler's center must be a finite number; got {center}"
            )),
            Step::Clip { lo, hi } if lo.is_nan() || hi.is_nan() || lo > hi => {
                bad(format!("clip needs lower <= upper; got [{lo}, {hi}]"))
            }
            Step::Bucketize { edges }
                if edges.iter().any(|e| e.is_nan()) || edges.windows(2).any(|w| w[0] >= w[1]) =>
            {
                bad(format!(
                    "bucketize needs strictly increasing edges; got {edges:?}"
                ))
            }
            Step::FillNull { value } if value.is_nan() => {
                bad("fill_null needs a value that is not NaN".into())
            }
            _ => Ok(()),
        }
    }
}

/// Applies `steps` ((column, step), in order) to `matrix`, rows of `width` floats.
pub fn apply(matrix: &mut [f32], width: usize, steps: &[(usize, Step)]) -> Result<()> {
    if let Some((col, _)) = steps.iter().find(|(c, _)| *c >= width) {
        return Err(Error::InvalidArgument(format!(
            "a transform reads column {col} of a {width}-column input"
        )));
    }
    if width == 0 {
        return Ok(());
    }
    for row in matrix.chunks_exact_mut(width) {
        for (col, step) in steps {
            row[*col] = step.apply(row[*col]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps() {
        let s = Step::Scale {
            center: 2.0,
            scale: 4.0,
        };
        assert_eq!(s.apply(6.0), 1.0);
        assert!(s.apply(f32::NAN).is_nan());
        assert_eq!(
            Step::Scale {
                center: 1.0,
                scale: 0.0
            }
            .apply(3.0),
            2.0
        );
        assert_eq!(Step::Log1p.apply(0.0), 0.0);
        assert!(Step::Log1p.apply(-2.0).is_nan());
        let clip = Step::Clip {
            lo: 0.0,
            hi: f64::INFINITY,
        };
        assert_eq!(clip.apply(-3.0), 0.0);
        let b = Step::Bucketize {
            edges: vec![18.0, 25.0, 40.0],
        };
        let got: Vec<f32> = [10.0, 18.0, 24.9, 25.0, 99.0]
            .iter()
            .map(|&x| b.apply(x))
            .collect();
        assert_eq!(got, vec![0.0, 1.0, 1.0, 2.0, 3.0]);
        assert_eq!(Step::FillNull { value: 7.0 }.apply(f32::NAN), 7.0);
        let mut m = vec![1.0, f32::NAN, 3.0, 4.0];
        apply(
            &mut m,
            2,
            &[(1, Step::FillNull { value: 0.0 }), (0, Step::Log1p)],
        )
        .unwrap();
        assert_eq!(m, vec![1f64.ln_1p() as f32, 0.0, 3f64.ln_1p() as f32, 4.0]);
        assert!(apply(&mut m, 2, &[(2, Step::Log1p)]).is_err());
        assert!(Step::Bucketize {
            edges: vec![2.0, 1.0]
        }
        .check()
        .is_err());
    }
}
