//! One ONNX model, run through ONNX Runtime's C API: the shared library the
//! `onnxruntime` wheel ships, loaded once per process through the `ort` crate's
//! `load-dynamic`. The same runtime, version, kernels and session options (one
//! intra-op thread, sequential, full graph optimization) as the Python predictor's
//! `onnxruntime.InferenceSession`, so both give the same floats for the same input.
//!
//! Used by the server's `/v1/predict` and by `Predictor.predict` (through
//! `_core.OnnxModel`), where it replaces the Python binding's `run`: the input is a
//! view of the caller's float32 rows (no copy), only the chosen output is computed
//! (names and run options resolved once), and the output is reduced as the predictor
//! reduces it. A call costs ONNX Runtime's own `Run` plus a tensor header for the
//! input and a copy of the output.

use std::sync::{Mutex, OnceLock};

use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions};
use ort::value::{TensorElementType, TensorRef, ValueType};

static RUNTIME: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// The process's ONNX Runtime, loaded from `lib` on first use (a later `lib` is not
/// loaded again: one runtime per process).
fn runtime(lib: &str) -> Result<&'static ort::environment::Environment, String> {
    RUNTIME
        .get_or_init(|| {
            ort::init_from(lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {lib}: {e}"))?
                .with_name("pitstop")
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A model ready to run: one session (ONNX Runtime's `Run` is not safe to call
/// concurrently on one session, so calls take turns), its input and output names.
pub struct Model {
    session: Mutex<(Session, RunOptions<HasSelectedOutputs>)>,
    input: String,
    output: String,
    one_per_row: bool,
}

impl Model {
    /// Builds the session of `bytes` (an ONNX model) with `threads` intra-op threads
    /// (0: ONNX Runtime's default, one per core).
    pub fn load(lib: &str, bytes: &[u8], threads: usize) -> Result<Model, String> {
        let env = runtime(lib)?;
        let e = |e: ort::Error<_>| e.to_string();
        let mut builder = Session::builder(env)
            .map_err(|e| e.to_string())?
            .with_intra_threads(threads)
            .map_err(e)?
            .with_inter_threads(1)
            .map_err(e)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(e)?;
        let s = builder
            .commit_from_memory(bytes)
            .map_err(|e| e.to_string())?;
        let input = s
            .inputs()
            .first()
            .map(|i| i.name().to_string())
            .ok_or("the model has no input")?;
        let outputs = s.outputs();
        let out = outputs
            .iter()
            .find(|o| o.name() == "probabilities")
            .or(outputs.first())
            .ok_or("the model has no output")?;
        let one_per_row = matches!(
            out.dtype(),
            ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }
                if matches!(shape.as_ref(), [_] | [_, 1] | [_, 2])
        );
        let output = out.name().to_string();
        let opts = RunOptions::new()
            .map_err(|e| e.to_string())?
            .with_outputs(OutputSelector::no_default().with(output.clone()));
        Ok(Model {
            session: Mutex::new((s, opts)),
            input,
            output,
            one_per_row,
        })
    }

    /// Whether the output is float32 of shape `[n]`, `[n, 1]` or `[n, 2]`: one
    /// prediction per row once [`Model::run`] has reduced it (the Python predictor's
    /// reduction, which keeps any other shape as it is).
    pub fn one_per_row(&self) -> bool {
        self.one_per_row
    }

    /// The predictions for `x`, `n` rows of `d` float32 values: the positive class of
    /// two probabilities, else the output flattened.
    pub fn run(&self, x: &[f32], n: usize, d: usize) -> Result<Vec<f32>, String> {
        if x.len() != n * d {
            return Err(format!("the input has {} values, not {n} x {d}", x.len()));
        }
        if n == 0 {
            return Ok(Vec::new());
        }
        let t = TensorRef::from_array_view(([n, d], x)).map_err(|e| e.to_string())?;
        let mut guard = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let (s, opts) = &mut *guard;
        let outs = s
            .run_with_options(ort::inputs![self.input.as_str() => t], &*opts)
            .map_err(|e| e.to_string())?;
        let (shape, data) = outs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output '{}' is not a float tensor ({e})", self.output))?;
        Ok(match shape.as_ref() {
            [_, 2] => data.chunks_exact(2).map(|c| c[1]).collect(),
            _ => data.to_vec(),
        })
    }
}
