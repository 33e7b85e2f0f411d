//! One ONNX model, run through ONNX Runtime's C API: the shared library the
//! `onnxruntime` wheel ships (1.22 or later), loaded once per process through the `ort`
//! crate's `load-dynamic`. The same runtime, version, kernels and session options (CPU,
//! sequential, full graph optimization, the caller's intra-op thread count) as the
//! Python predictor's `onnxruntime.InferenceSession`, so both give the same floats for
//! the same input.
//!
//! Used by the server's `/v1/predict` and by `Predictor.predict` (through
//! `_core.OnnxModel`), where it replaces the Python binding's `run`: the input tensor
//! is a view of the caller's rows, only the chosen output is computed (names and run
//! options resolved once), and the output is reduced as the predictor reduces it. A
//! call costs ONNX Runtime's own `Run` plus a tensor header for the input and a copy of
//! the output.
//!
//! ONNX Runtime's `Run` must not be called on one session from two threads at once
//! (`ort` makes it take `&mut`), so a model keeps a pool of sessions: a call takes one
//! (building another from the model's bytes only when every session is busy, so there
//! are never more sessions than concurrent callers: one for a single-threaded caller)
//! and puts it back. The pool's lock is held only to take or return a session, never
//! while the model runs, so concurrent callers run in parallel as they did on
//! onnxruntime's Python session, and a `fork` while another thread predicts does not
//! leave the child waiting on a lock held by a thread that no longer exists.

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

/// A session and the run options that select the model's output.
struct Runner {
    session: Session,
    opts: RunOptions<HasSelectedOutputs>,
}

/// One input of a model as onnxruntime's Python binding describes it: its name, its
/// type (`tensor(float)`, `tensor(int64)`, `seq(...)`...) and, for a tensor, each
/// dimension's size, or its symbolic name (`N`) or nothing when it is not fixed.
pub struct Input {
    pub name: String,
    pub ty: String,
    pub shape: Vec<Dim>,
}

/// One dimension of an [`Input`].
pub enum Dim {
    Fixed(i64),
    Named(String),
    Free,
}

/// A model ready to run: its sessions, input and output names.
pub struct Model {
    lib: String,
    /// The model, kept to build another session when every one is busy.
    bytes: Vec<u8>,
    threads: usize,
    /// Idle sessions (see the module doc).
    idle: Mutex<Vec<Runner>>,
    input: String,
    output: String,
    one_per_row: bool,
    inputs: Vec<Input>,
}

impl Model {
    /// Builds the session of `bytes` (an ONNX model) with `threads` intra-op threads
    /// (0: ONNX Runtime's default, one per core).
    pub fn load(lib: &str, bytes: &[u8], threads: usize) -> Result<Model, String> {
        let s = session(lib, bytes, threads)?;
        let inputs: Vec<Input> = s
            .inputs()
            .iter()
            .map(|i| describe(i.name(), i.dtype()))
            .collect();
        let input = inputs
            .first()
            .map(|i| i.name.clone())
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
        let first = Runner {
            opts: select(&output)?,
            session: s,
        };
        Ok(Model {
            lib: lib.to_string(),
            bytes: bytes.to_vec(),
            threads,
            idle: Mutex::new(vec![first]),
            input,
            output,
            one_per_row,
            inputs,
        })
    }

    /// The model's inputs, for the caller to check against the rows it will feed.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
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
        let taken = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut r = match taken {
            Some(r) => r,
            None => Runner {
                session: session(&self.lib, &self.bytes, self.threads)?,
                opts: select(&self.output)?,
            },
        };
        let y = self.run_on(&mut r, x, n, d);
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        y
    }

    fn run_on(&self, r: &mut Runner, x: &[f32], n: usize, d: usize) -> Result<Vec<f32>, String> {
        let t = TensorRef::from_array_view(([n, d], x)).map_err(|e| e.to_string())?;
        let outs = r
            .session
            .run_with_options(ort::inputs![self.input.as_str() => t], &r.opts)
            .map_err(|e| e.to_string())?;
        let (shape, data) = outs
            .get(self.output.as_str())
            .ok_or_else(|| format!("the model gave no output '{}'", self.output))?
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("output '{}' is not a float tensor ({e})", self.output))?;
        Ok(match shape.as_ref() {
            [_, 2] => data.chunks_exact(2).map(|c| c[1]).collect(),
            _ => data.to_vec(),
        })
    }
}

/// `ty` in the words of onnxruntime's Python binding (`NodeArg.type` and `.shape`).
fn describe(name: &str, ty: &ValueType) -> Input {
    let (ty, shape) = match ty {
        ValueType::Tensor {
            ty,
            shape,
            dimension_symbols,
        } => {
            let dims = shape.iter().enumerate().map(|(k, &d)| match d {
                d if d >= 0 => Dim::Fixed(d),
                _ => match dimension_symbols.get(k).filter(|s| !s.is_empty()) {
                    Some(s) => Dim::Named(s.to_string()),
                    None => Dim::Free,
                },
            });
            (format!("tensor({})", element(*ty)), dims.collect())
        }
        other => (format!("{other}"), Vec::new()),
    };
    Input {
        name: name.to_string(),
        ty,
        shape,
    }
}

/// ONNX's name of a tensor element type (`float`, `double`, `int64`...).
fn element(ty: TensorElementType) -> String {
    use TensorElementType as T;
    let name = match ty {
        T::Float32 => "float",
        T::Float64 => "double",
        T::Float16 => "float16",
        T::Bfloat16 => "bfloat16",
        T::Int8 => "int8",
        T::Int16 => "int16",
        T::Int32 => "int32",
        T::Int64 => "int64",
        T::Uint8 => "uint8",
        T::Uint16 => "uint16",
        T::Uint32 => "uint32",
        T::Uint64 => "uint64",
        T::Bool => "bool",
        T::String => "string",
        other => return other.to_string(),
    };
    name.to_string()
}

/// A session of `bytes` with `threads` intra-op threads.
fn session(lib: &str, bytes: &[u8], threads: usize) -> Result<Session, String> {
    let env = runtime(lib)?;
    let e = |e: ort::Error<_>| e.to_string();
    Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(threads)
        .map_err(e)?
        .with_inter_threads(1)
        .map_err(e)?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(e)?
        .commit_from_memory(bytes)
        .map_err(|e| e.to_string())
}

/// Run options that compute `output` alone.
fn select(output: &str) -> Result<RunOptions<HasSelectedOutputs>, String> {
    Ok(RunOptions::new()
        .map_err(|e| e.to_string())?
        .with_outputs(OutputSelector::no_default().with(output.to_string())))
}
