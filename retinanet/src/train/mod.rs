//! Training, evaluation and checkpoints of a whole run: what `focal train`, `focal eval`
//! and `focal detect` are built on. One concern per file:
//!
//! - [`config`]: [`TrainConfig`], every choice of a run, as TOML;
//! - [`builders`]: what a configuration builds, side by side: datasets, loader,
//!   optimiser, learning-rate schedule;
//! - [`step`]: one optimiser step (targets → forward → loss → backward → clip → update);
//! - [`data_parallel`]: the forward/backward pass of a step, whole or cut into shards,
//!   in one process or shared by several ([`comm`]: the [`Comm`] seam between them);
//! - [`trainer`]: [`Trainer`], the loop around the step, with evaluation, checkpoints and
//!   exact resumption;
//! - [`records`] and [`observer`]: what the loop records (`metrics.jsonl` rows, checkpoint
//!   metadata) and how it reports to a progress bar ([`Observer`]);
//! - [`run_folder`]: the files of a run folder, written atomically;
//! - [`checkpoint`]: reading a trainer checkpoint back (for eval/detect, and to resume);
//! - [`evaluate`](mod@evaluate): inference over a dataset scored by focal's COCOeval;
//! - [`init`]: starting from torchvision, focal-exported or ImageNet weights, with the
//!   class output matched to the dataset's classes;
//! - [`memory`]: the memory estimate a run is checked against before it starts;
//!
//! ```no_run
//! use std::path::Path;
//! use focal_retinanet::train::{Outcome, Silent, TrainConfig, Trainer};
//!
//! let mut trainer = Trainer::new(TrainConfig::shapes(), Path::new("runs/demo"))?;
//! if let Outcome::Finished(result) = trainer.run(&mut Silent)? {
//!     println!("{}", result.summary());
//! }
//! # Ok::<(), focal_retinanet::Error>(())
//! ```

pub mod builders;
pub mod checkpoint;
pub mod comm;
pub mod config;
pub mod data_parallel;
pub mod distributed;
pub mod evaluate;
pub mod init;
pub mod memory;
pub mod observer;
pub mod records;
pub mod run_folder;
pub mod step;
pub mod trainer;

pub use builders::{
    build_optimizer, build_schedule, build_train_loader, class_names, open_datasets,
};
pub use checkpoint::{load_trained_model, TrainedModel};
pub use comm::{Comm, Local, ThreadRanks};
pub use config::{
    CocoData, DataConfig, DecayKind, OptimizerConfig, OptimizerKind, ScheduleConfig, ShapesData,
    TrainConfig,
};
pub use evaluate::{
    detect_batch, evaluate, evaluate_until, image_size, to_coco_results, Evaluation,
};
pub use init::{init_from_safetensors, ClassHead, InitReport};
pub use observer::{Observer, Silent};
pub use records::{ClassName, EvalRecord, MetricRow, RunMetadata, StepRecord};
pub use run_folder::{RunFolder, RunLock};
pub use trainer::{Outcome, StartOptions, Trainer};
