//! Categorical encoders: `label_encoder` and `one_hot`, fitted in Python on the
//! training split (the categories, most frequent first) and applied here, the one
//! function that training rows, `Predictor.predict` and the HTTP server all go
//! through, so a model sees the same bits in each.
//!
//! A category is compared as the type it was fitted as: text (`string`: any Arrow
//! string or string-dictionary column), a 64-bit integer (`int64`: any integer
//! column) or a boolean (`bool`). `label_encoder` gives one column: the category's
//! index, `k` (the number of fitted categories) for an unseen one, NaN for a missing
//! value. `one_hot` gives `width` columns (`top_k` + an "other" column that is always
//! the last): 1 at the category's index, 1 in "other" for an unseen value, all 0 for
//! a missing one.
//!
//! Cost: one hash lookup per row (categories are indexed once, when the encoder is
//! built), O(rows × width) to write the output.

use std::collections::HashMap;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, ArrayRef};
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::DataType;

use crate::error::{Error, Result};

/// The fitted categories, in their fitted order.
#[derive(Clone, Debug, PartialEq)]
pub enum Categories {
    Str(Vec<String>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl Categories {
    fn len(&self) -> usize {
        match self {
            Categories::Str(v) => v.len(),
            Categories::Int(v) => v.len(),
            Categories::Bool(v) => v.len(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Categories::Str(_) => "string",
            Categories::Int(_) => "int64",
            Categories::Bool(_) => "bool",
        }
    }
}

#[derive(Clone, Debug)]
enum Index {
    Str(HashMap<String, u32>),
    Int(HashMap<i64, u32>),
    Bool([Option<u32>; 2]),
}

/// A fitted encoder, its categories indexed.
#[derive(Clone, Debug)]
pub struct Encoder {
    one_hot: bool,
    index: Index,
    /// The number of fitted categories.
    k: usize,
    width: usize,
    kind: Categories,
}

impl Encoder {
    /// `kind` is `label_encoder` or `one_hot`; `width` the output columns (1 for
    /// `label_encoder`; `top_k + 1` for `one_hot`, at least `categories + 1`).
    pub fn new(kind: &str, categories: Categories, width: usize) -> Result<Encoder> {
        let one_hot = match kind {
            "one_hot" => true,
            "label_encoder" => false,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown categorical encoder '{other}' (label_encoder, one_hot)"
                )))
            }
        };
        let k = categories.len();
        if (one_hot && width < k + 1) || (!one_hot && width != 1) || k >= u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "a {kind} of {k} categories cannot be {width} columns wide"
            )));
        }
        let index = match &categories {
            Categories::Str(v) => Index::Str(first_positions(v.iter().cloned())),
            Categories::Int(v) => Index::Int(first_positions(v.iter().copied())),
            Categories::Bool(v) => {
                let mut at = [None, None];
                for (j, &b) in v.iter().enumerate() {
                    at[b as usize].get_or_insert(j as u32);
                }
                Index::Bool(at)
            }
        };
        Ok(Encoder {
            one_hot,
            index,
            k,
            width,
            kind: categories,
        })
    }

    /// Output columns per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Encodes `a` (the values of feature `name`) into rows of `stride` floats of
    /// `out`, at columns `at..at + width` of each row.
    pub fn encode(
        &self,
        a: &dyn Array,
        name: &str,
        out: &mut [f32],
        stride: usize,
        at: usize,
    ) -> Result<()> {
        if at + self.width > stride || out.len() < a.len() * stride {
            return Err(Error::InvalidArgument(format!(
                "feature '{name}': {} rows of {} encoded columns do not fit the output",
                a.len(),
                self.width
            )));
        }
        let col = self.normalized(a, name)?;
        let n = col.len();
        let slot = |i: usize| -> Option<u32> {
            match &self.index {
                Index::Str(m) => m.get(col.as_string::<i32>().value(i)).copied(),
                Index::Int(m) => m.get(&col.as_primitive::<Int64Type>().value(i)).copied(),
                Index::Bool(m) => m[col.as_boolean().value(i) as usize],
            }
        };
        for i in 0..n {
            let row = &mut out[i * stride + at..i * stride + at + self.width];
            let missing = col.is_null(i);
            if self.one_hot {
                row.fill(0.0);
                if !missing {
                    let j = slot(i).map_or(self.width - 1, |j| j as usize);
                    row[j] = 1.0;
                }
            } else {
                row[0] = if missing {
                    f32::NAN
                } else {
                    slot(i).map_or(self.k, |j| j as usize) as f32
                };
            }
        }
        Ok(())
    }

    /// `a` as the type the categories were fitted as (Utf8, Int64 or Boolean).
    fn normalized(&self, a: &dyn Array, name: &str) -> Result<ArrayRef> {
        let t = a.data_type();
        let stringy =
            |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
        let want = match (&self.kind, t) {
            (_, DataType::Null) => None,
            (Categories::Str(_), t) if stringy(t) => Some(DataType::Utf8),
            (Categories::Str(_), DataType::Dictionary(_, v)) if stringy(v) => Some(DataType::Utf8),
            (Categories::Int(_), t) if t.is_integer() => Some(DataType::Int64),
            (Categories::Bool(_), DataType::Boolean) => Some(DataType::Boolean),
            _ => {
                return Err(Error::Schema(format!(
                    "feature '{name}' is {t}, but its {} was fitted on {} categories; \
                     refit the view's transforms (train_test_split) on the current data",
                    if self.one_hot {
                        "one_hot"
                    } else {
                        "label_encoder"
                    },
                    self.kind.type_name()
                )))
            }
        };
        let want = want.unwrap_or(match self.kind {
            Categories::Str(_) => DataType::Utf8,
            Categories::Int(_) => DataType::Int64,
            Categories::Bool(_) => DataType::Boolean,
        });
        let opts = CastOptions {
            safe: false,
            ..Default::default()
        };
        cast_with_options(a, &want, &opts).map_err(|e| {
            Error::Schema(format!(
                "feature '{name}': its values cannot be compared with the fitted {} \
                 categories ({e})",
                self.kind.type_name()
            ))
        })
    }
}

/// Each value's first position (the fitted list has no repeats; be safe anyway).
fn first_positions<T: std::hash::Hash + Eq>(values: impl Iterator<Item = T>) -> HashMap<T, u32> {
    let mut m = HashMap::new();
    for (j, v) in values.enumerate() {
        m.entry(v).or_insert(j as u32);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{BooleanArray, Int32Array, StringArray, UInt64Array};

    fn run(e: &Encoder, a: &dyn Array) -> Vec<f32> {
        let mut out = vec![-1.0; a.len() * e.width()];
        e.encode(a, "f", &mut out, e.width(), 0).unwrap();
        out
    }

    #[test]
    fn label_and_one_hot() {
        let cats = Categories::Str(vec!["b".into(), "a".into()]);
        let a = StringArray::from(vec![Some("a"), None, Some("zz"), Some("b")]);
        let l = Encoder::new("label_encoder", cats.clone(), 1).unwrap();
        let got = run(&l, &a);
        assert_eq!((got[0], got[2], got[3]), (1.0, 2.0, 0.0));
        assert!(got[1].is_nan());
        let o = Encoder::new("one_hot", cats, 4).unwrap();
        assert_eq!(
            run(&o, &a),
            vec![0., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 1., 1., 0., 0., 0.]
        );
    }

    #[test]
    fn types() {
        let ints = Encoder::new("label_encoder", Categories::Int(vec![7, -1]), 1).unwrap();
        assert_eq!(
            run(&ints, &Int32Array::from(vec![-1, 7, 3])),
            vec![1., 0., 2.]
        );
        assert!(ints
            .encode(&StringArray::from(vec!["7"]), "f", &mut [0.0], 1, 0)
            .is_err());
        // A u64 past i64::MAX is an error that names the feature, not a wrapped value.
        let big = UInt64Array::from(vec![u64::MAX]);
        let err = ints.encode(&big, "f", &mut [0.0], 1, 0).unwrap_err();
        assert!(err.to_string().contains("feature 'f'"), "{err}");
        let b = Encoder::new("one_hot", Categories::Bool(vec![true]), 2).unwrap();
        assert_eq!(
            run(&b, &BooleanArray::from(vec![Some(false), Some(true), None])),
            vec![0., 1., 1., 0., 0., 0.]
        );
        assert!(Encoder::new("one_hot", Categories::Int(vec![1, 2]), 2).is_err());
        assert!(Encoder::new("nope", Categories::Int(vec![]), 1).is_err());
    }
}
