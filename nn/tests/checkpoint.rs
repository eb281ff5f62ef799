//! Checkpoints: a bitwise round trip, an interrupted and resumed run that reproduces the
//! uninterrupted loss sequence bit for bit, and every kind of damaged file giving an error
//! that names the file, without a panic and without a large allocation.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use common::{bn_net, dataset, train, Classifier, SmallCnn};
use focal_engine::Rng;
use focal_nn::checkpoint::HEADER_LEN;
use focal_nn::{
    load_checkpoint, save_checkpoint, AdamW, Checkpoint, Optimizer, Schedule, Sgd, TrainState,
};

/// Records the largest single allocation made by this thread, to show that no length field
/// in a damaged file makes the reader allocate more than the file holds. (Per thread,
/// because the tests of this file run in parallel.)
struct Largest;

thread_local! {
    // A `const` initialiser and a type without `Drop`: reading it never allocates, so the
    // allocator may use it.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
}

fn reset_largest() {
    LARGEST.with(|l| l.set(0));
}

fn largest() -> usize {
    LARGEST.with(|l| l.get())
}

// SAFETY: every call is forwarded unchanged to the system allocator, with the same layout
// and pointer; the wrapper only records the requested size in a thread-local cell.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Largest = Largest;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-nn-ckpt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const CONFIG: &str = "model = \"bn_net\"\nwidth = 4\n";

/// Trains `steps` steps, saves, and returns the path and the checkpoint bytes.
fn trained_checkpoint(dir: &Path) -> (PathBuf, Vec<u8>) {
    let data = dataset(60, &mut Rng::new(1));
    let mut model = bn_net(4, &mut Rng::new(3));
    let mut opt = Sgd::new(0.9, 1e-4).nesterov(true);
    let mut rng = Rng::new(4);
    train(
        &mut model,
        &mut opt,
        &Schedule::constant(0.05),
        &data,
        &mut rng,
        0,
        3,
        8,
    );
    let path = dir.join("last.ckpt");
    let state = TrainState {
        step: 3,
        epoch: 1,
        rng_state: rng.state(),
        metadata: "{\"best_ap\": 0.25}".into(),
    };
    save_checkpoint(&path, &mut model, Some(&opt), &state, CONFIG).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

#[test]
fn save_then_load_is_bitwise_identical() {
    let dir = temp_dir("roundtrip");
    let (path, bytes) = trained_checkpoint(&dir);
    // Fresh objects, built from another seed: everything must come from the file.
    let mut model = bn_net(4, &mut Rng::new(99));
    let mut opt = Sgd::new(0.0, 0.0);
    let state = load_checkpoint(&path, CONFIG, &mut model, Some(&mut opt)).unwrap();
    assert_eq!(state.step, 3);
    assert_eq!(state.epoch, 1);
    assert_eq!(state.metadata, "{\"best_ap\": 0.25}");
    let original = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(state.rng_state, original.rng_state);
    // The BatchNorm's statistics moved and its counter counted the three steps.
    assert_eq!(
        original.counters,
        vec![("1.num_batches_tracked".to_string(), 3)]
    );
    // Momentum buffers for all five parameters (conv weight, BN weight and bias, linear).
    assert_eq!(original.optimizer.as_ref().unwrap().params.len(), 5);
    // Capturing the restored objects gives the very same bytes.
    let again = Checkpoint::capture(&mut model, Some(&opt), &state, CONFIG);
    assert_eq!(again.to_bytes(), bytes);
    assert!(opt.nesterov && opt.momentum == 0.9);
    // No temporary file is left next to the checkpoint.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs 10 steps straight, and 5 steps + save + load into fresh objects + 5 steps, and
/// compares the losses and final weights bit for bit.
fn resume_matches<M: Classifier, O: Optimizer>(
    name: &str,
    make_model: impl Fn(u64) -> M,
    make_opt: impl Fn() -> O,
    schedule: Schedule,
) {
    let dir = temp_dir(name);
    let data = dataset(90, &mut Rng::new(1));
    let (seed, rng_seed, batch) = (3, 4, 8);

    let mut model = make_model(seed);
    let mut opt = make_opt();
    let mut rng = Rng::new(rng_seed);
    let straight = train(
        &mut model, &mut opt, &schedule, &data, &mut rng, 0, 10, batch,
    );
    let straight_end = Checkpoint::capture(&mut model, None, &TrainState::default(), "");

    let mut model = make_model(seed);
    let mut opt = make_opt();
    let mut rng = Rng::new(rng_seed);
    let mut resumed = train(
        &mut model, &mut opt, &schedule, &data, &mut rng, 0, 5, batch,
    );
    let path = dir.join("ckpt");
    let state = TrainState {
        step: 5,
        epoch: 0,
        rng_state: rng.state(),
        metadata: String::new(),
    };
    save_checkpoint(&path, &mut model, Some(&opt), &state, name).unwrap();
    drop((model, opt, rng));

    let mut model = make_model(seed + 100);
    let mut opt = make_opt();
    let state = load_checkpoint(&path, name, &mut model, Some(&mut opt)).unwrap();
    let mut rng = Rng::from_state(state.rng_state);
    resumed.extend(train(
        &mut model, &mut opt, &schedule, &data, &mut rng, state.step, 5, batch,
    ));
    let resumed_end = Checkpoint::capture(&mut model, None, &TrainState::default(), "");

    println!("{name}: {straight:?}");
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(&straight),
        bits(&resumed),
        "{name}: loss sequences differ"
    );
    assert!(
        straight[9] < straight[0],
        "{name}: the run should learn something"
    );
    assert_eq!(
        straight_end.to_bytes(),
        resumed_end.to_bytes(),
        "{name}: final weights differ"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_losses_sgd_batchnorm() {
    resume_matches(
        "sgd-bn",
        |seed| bn_net(4, &mut Rng::new(seed)),
        || Sgd::new(0.9, 1e-3),
        Schedule::multi_step(0.05, vec![7]).with_warmup(3, 0.1),
    );
}

#[test]
fn resumed_run_reproduces_the_uninterrupted_losses_adamw_groupnorm() {
    resume_matches(
        "adamw-gn",
        |seed| SmallCnn::new(&mut Rng::new(seed)),
        || AdamW::new(1e-2),
        Schedule::cosine(3e-3, 10, 0.0).with_warmup(2, 0.5),
    );
}

/// Writes `bytes` to a file and loads it into a fresh model; returns the error text.
/// Also checks that loading never allocated more than [`MAX_ALLOC`] at once (the checkpoint is
/// about 3 KB; a corrupt length trusted blindly would ask for gigabytes).
fn load_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let mut model = bn_net(4, &mut Rng::new(0));
    let mut opt = Sgd::new(0.9, 0.0);
    reset_largest();
    let result = load_checkpoint(&path, CONFIG, &mut model, Some(&mut opt));
    let largest = largest();
    assert!(
        largest <= MAX_ALLOC,
        "{name}: loading allocated {largest} bytes at once"
    );
    let e = result.expect_err(name).chain();
    assert!(
        e.contains(&path.display().to_string()),
        "{name}: error does not name the file: {e}"
    );
    println!("{name}: {e}");
    e
}

/// serde preallocates at most 1 MiB for a sequence whose announced length it cannot trust,
/// and grows it only as values are actually read; anything near this bound would mean a
/// length field was believed.
const MAX_ALLOC: usize = 2 << 20;

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes[HEADER_LEN..]);
    bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    bytes
}

#[test]
fn damaged_checkpoints_give_errors_naming_the_file() {
    let dir = temp_dir("damaged");
    let (_, good) = trained_checkpoint(&dir);
    let n = good.len();
    assert!(n > 1000);

    let e = load_error(&dir, "empty", &[]);
    assert!(e.contains("empty"), "{e}");
    for cut in [1, 7, 8, 12, 23, HEADER_LEN, HEADER_LEN + 1, n / 2, n - 1] {
        let e = load_error(&dir, &format!("truncated-{cut}"), &good[..cut]);
        assert!(e.contains("truncated"), "{e}");
    }
    let mut b = good.clone();
    b[0..8].copy_from_slice(b"PK\x03\x04zip!");
    assert!(load_error(&dir, "magic", &b).contains("not a focal checkpoint"));
    let mut b = good.clone();
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert!(load_error(&dir, "version", &b).contains("version 2"));
    let mut b = good.clone();
    b[n - 5] ^= 0x40;
    assert!(load_error(&dir, "corrupted-byte", &b).contains("checksum"));
    let mut b = good.clone();
    b[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(load_error(&dir, "absurd-payload-length", &b).contains("announces"));
    // An absurd length inside a payload whose checksum is right: the configuration string's
    // length (the first field) claims 2^62 bytes.
    let mut b = good.clone();
    b[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let e = load_error(&dir, "absurd-inner-length", &with_crc(b));
    assert!(
        e.contains("cannot decode the payload: a length field"),
        "{e}"
    );
    let mut rng = Rng::new(7);
    let random: Vec<u8> = (0..n).map(|_| rng.below(256) as u8).collect();
    assert!(load_error(&dir, "random", &random).contains("not a focal checkpoint"));
    let mut b = good[..HEADER_LEN].to_vec();
    b.extend_from_slice(&random[HEADER_LEN..]);
    let e = load_error(&dir, "random-payload", &b);
    assert!(e.contains("checksum"), "{e}");
    let e = load_error(&dir, "random-payload-valid-crc", &with_crc(b));
    assert!(
        e.contains("cannot decode the payload: a length field"),
        "{e}"
    );
    let mut model = bn_net(4, &mut Rng::new(0));
    let e = load_checkpoint(&dir.join("nope.ckpt"), CONFIG, &mut model, None).unwrap_err();
    assert!(
        e.chain().contains("nope.ckpt") && e.chain().contains("cannot read"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_byte_changed_with_a_valid_checksum_never_panics() {
    // Change each byte of the payload in turn (and fix the checksum), then decode and restore:
    // an error or a successful load, never a panic or a huge allocation.
    let dir = temp_dir("fuzz");
    let (_, good) = trained_checkpoint(&dir);
    let mut errors = 0;
    for i in (HEADER_LEN..good.len()).step_by(3) {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= flip;
            let b = with_crc(b);
            reset_largest();
            let result = Checkpoint::from_bytes(&b).and_then(|c| {
                let mut model = bn_net(4, &mut Rng::new(0));
                let mut opt = Sgd::new(0.9, 0.0);
                c.check_config(CONFIG)?;
                c.restore_model(&mut model)?;
                c.restore_optimizer(&mut model, &mut opt)
            });
            assert!(
                largest() <= MAX_ALLOC,
                "byte {i}: {} bytes at once",
                largest()
            );
            errors += result.is_err() as usize;
        }
    }
    assert!(errors > 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn architecture_mismatches_are_named() {
    let dir = temp_dir("mismatch");
    let (path, _) = trained_checkpoint(&dir);
    // Another configuration: the differing line is quoted, both ways.
    let mut model = bn_net(4, &mut Rng::new(0));
    let e = load_checkpoint(&path, "model = \"bn_net\"\nwidth = 8\n", &mut model, None)
        .unwrap_err()
        .chain();
    assert!(
        e.contains("`width = 4`") && e.contains("`width = 8`"),
        "{e}"
    );
    // Same configuration text but a wider model: each parameter with both shapes.
    let mut wide = bn_net(8, &mut Rng::new(0));
    let e = load_checkpoint(&path, CONFIG, &mut wide, None)
        .unwrap_err()
        .chain();
    assert!(e.contains(path.to_str().unwrap()), "{e}");
    assert!(
        e.contains("0.weight: checkpoint has shape [4, 1, 3, 3], model has [8, 1, 3, 3]"),
        "{e}"
    );
    assert!(
        e.contains("5.weight: checkpoint has shape [3, 64], model has [3, 128]"),
        "{e}"
    );
    // The model is untouched after a failed load.
    let before = focal_nn::named_params(&mut wide)[0].1.value.to_vec();
    let _ = load_checkpoint(&path, CONFIG, &mut wide, None);
    assert_eq!(
        focal_nn::named_params(&mut wide)[0].1.value.to_vec(),
        before
    );
    // Missing and unexpected names are listed.
    let mut other = SmallCnn::new(&mut Rng::new(0));
    let e = load_checkpoint(&path, CONFIG, &mut other, None)
        .unwrap_err()
        .chain();
    assert!(
        e.contains("missing from the checkpoint: conv1.weight"),
        "{e}"
    );
    assert!(e.contains("not in the model: 0.weight"), "{e}");
    // An optimiser of another kind.
    let mut model = bn_net(4, &mut Rng::new(0));
    let mut adam = AdamW::new(0.0);
    let e = load_checkpoint(&path, CONFIG, &mut model, Some(&mut adam))
        .unwrap_err()
        .chain();
    assert!(e.contains("sgd") && e.contains("adamw"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let dir = temp_dir("atomic");
    let (path, good) = trained_checkpoint(&dir);
    // Saving into a folder that does not exist fails with an error naming the path...
    let mut model = bn_net(4, &mut Rng::new(0));
    let bad = dir.join("missing-folder").join("x.ckpt");
    let e = save_checkpoint(&bad, &mut model, None, &TrainState::default(), CONFIG).unwrap_err();
    assert!(e.chain().contains("missing-folder"), "{e}");
    // ...and the existing checkpoint is unchanged and still loads.
    assert_eq!(std::fs::read(&path).unwrap(), good);
    let _ = Checkpoint::read(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
