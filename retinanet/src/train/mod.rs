//! Training, evaluation and checkpoints of a whole run: what `focal train`, `focal eval`
//! and `focal detect` are built on.
//!
//! - [`config`]: [`TrainConfig`], every choice of a run, as TOML;
//! - [`trainer`]: [`Trainer`], the loop (load → forward → loss → backward → clip → step),
//!   its run folder and exact resumption;
//! - [`evaluate`](mod@evaluate): inference over a dataset scored by focal's COCOeval;
//! - [`init`]: starting from torchvision or ImageNet weights.
//!
//! ```no_run
//! use std::path::Path;
//! use focal_retinanet::train::{Outcome, Silent, TrainConfig, Trainer};
//!
//! let mut trainer = Trainer::new(TrainConfig::shapes(), Path::new("runs/demo"))?;
//! if let Outcome::Finished(result) = trainer.run(&mut Silent)? {
//!     println!("{}", result.summary());
//! }
//! # Ok::<(), focal_retinanet::train::TrainError>(())
//! ```

pub mod config;
pub mod data_parallel;
pub mod evaluate;
pub mod init;
pub mod trainer;

pub use config::{
    CocoData, DataConfig, DecayKind, OptimizerConfig, OptimizerKind, ScheduleConfig, ShapesData,
    TrainConfig,
};
pub use evaluate::{detect_batch, evaluate, image_size, to_coco_results, Evaluation};
pub use init::init_from_safetensors;
pub use trainer::{
    build_optimizer, class_names, load_trained_model, open_datasets, ClassName, EvalRecord,
    MetricRow, Observer, Outcome, RunMetadata, Silent, StepRecord, TrainError, TrainedModel,
    Trainer,
};
