//! Weight exchange through safetensors: a bitwise round trip, the report of unmatched names,
//! and agreement with PyTorch in both directions.
//!
//! The fixtures in tests/fixtures/ were made by `make_fixtures.py` there (PyTorch 2.15,
//! torchvision 0.29, safetensors 0.8). It printed:
//!
//! ```text
//! eval output: tensor([[-0.7253423, -0.0076299, -0.6008361, -0.7159206,  0.3493681],
//!         [-0.6006283,  0.1191864, -0.3926885, -0.6944563,  0.7027667]])
//! train output: tensor([[-0.7734379, -0.1997051, -0.7987385, -0.4150155,  0.4247052],
//!         [-0.1946360, -0.3349165, -0.5770459, -0.6911268,  1.0513084]])
//! train running_mean: tensor([ 0.1486546,  0.1372757,  0.0213160, -0.0681766,  0.0595225,  0.1123524,
//!         -0.0048897,  0.0998995])
//! train running_var: tensor([1.6874415, 0.7771011, 0.9800133, 0.5222017, 1.2925268, 1.6136906,
//!         0.9992431, 1.2346320])
//! num_batches_tracked after train forward: 8
//! half as f32: tensor([ 1.0000000e+00, -2.0000000e+00,  3.3325195e-01,  6.5504000e+04,
//!          5.9604645e-08,  3.1406250e+00])
//! bfloat as f32: tensor([ 1.0000000e+00, -2.0000000e+00,  3.3398438e-01,  6.5536000e+04,
//!          6.0070306e-08,  3.1406250e+00])
//! ```
//!
//! The same outputs are stored in the fixture under `expected.*` (all values), which the
//! tests compare against; the first rows above are asserted literally as well.

use std::path::{Path, PathBuf};

use focal_engine::{no_grad, Rng, Tensor};
use focal_nn::checkpoint::Checkpoint;
use focal_nn::weights::safetensors_bytes;
use focal_nn::{
    export_safetensors, import_safetensors, named_params, read_safetensors, set_train, BatchNorm2d,
    Conv2d, FileTensor, GroupNorm, ImportOptions, Layer, Linear, MaxPool2d, Module, ReLU,
    Sequential, TrainState, Upsample, Visitor,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("focal-nn-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// focal's twin of the fixture script's `Tiny`, with the same names.
struct Tiny {
    stem: Sequential,
    frozen: BatchNorm2d,
    block: Sequential,
    head: Linear,
}

impl Tiny {
    fn new(classes: usize, rng: &mut Rng) -> Tiny {
        Tiny {
            stem: Sequential::new()
                .push(Conv2d::new(3, 8, 3, rng).stride(2).padding(1).no_bias())
                .push(BatchNorm2d::new(8))
                .push(ReLU)
                .push(MaxPool2d::new(3, 2, 1)),
            frozen: BatchNorm2d::frozen(8),
            block: Sequential::new()
                .push(Conv2d::new(8, 8, 3, rng).padding(1))
                .push(GroupNorm::new(4, 8))
                .push(ReLU),
            head: Linear::new(8 * 8 * 8, classes, rng),
        }
    }

    fn forward(&mut self, x: &Tensor) -> Tensor {
        let x = self.frozen.forward(&self.stem.forward(x));
        let x = Upsample::new(2).forward(&self.block.forward(&x));
        let n = x.shape()[0];
        self.head.forward(&x.reshape(&[n, 8 * 8 * 8]))
    }
}

impl Module for Tiny {
    fn visit(&mut self, v: &mut dyn Visitor) {
        v.child("stem", &mut self.stem);
        v.child("frozen", &mut self.frozen);
        v.child("block", &mut self.block);
        v.child("head", &mut self.head);
    }
}

/// x[i] = ((37·i) mod 101)/50 − 1, as in the script.
fn the_input() -> Tensor {
    let data = (0..2 * 3 * 16 * 16)
        .map(|i| ((37 * i) % 101) as f32 / 50.0 - 1.0)
        .collect();
    Tensor::from_vec(&[2, 3, 16, 16], data)
}

fn expected(name: &str) -> Tensor {
    let all = read_safetensors(&fixture("tiny_torch.safetensors")).unwrap();
    let (_, t, _) = all.into_iter().find(|(n, _, _)| n == name).unwrap();
    match t {
        FileTensor::Float(t) => t,
        _ => panic!("{name} is not a float tensor"),
    }
}

fn assert_close(got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.shape(), want.shape());
    let d = got.max_abs_diff(want);
    assert!(
        d <= tol,
        "max |diff| {d}:\n got {:?}\nwant {:?}",
        got.data(),
        want.data()
    );
}

fn skip_expected(name: &str) -> Option<String> {
    (!name.starts_with("expected.")).then(|| name.to_string())
}

#[test]
fn pytorch_weights_load_and_give_pytorchs_outputs() {
    let mut m = Tiny::new(5, &mut Rng::new(1));
    let opts = ImportOptions::new().rename(skip_expected).strict(true);
    let report = import_safetensors(&mut m, &fixture("tiny_torch.safetensors"), &opts).unwrap();
    assert!(report.is_complete(), "{:?}", report.problems());
    // Every entry of the state dict, num_batches_tracked included (an I64 in the file).
    assert_eq!(report.loaded.len(), 16);
    assert_eq!(
        report.skipped.len(),
        4,
        "the expected.* outputs: {:?}",
        report.skipped
    );
    assert_eq!(m.stem.layers.len(), 4);

    set_train(&mut m, false);
    let y = no_grad(|| m.forward(&the_input()));
    assert_close(&y, &expected("expected.eval"), 2e-5);
    // The first row as printed by the script.
    let row = [-0.7253423, -0.0076299, -0.6008361, -0.7159206, 0.3493681];
    for (g, w) in y.data()[..5].iter().zip(row) {
        assert!((g - w).abs() < 2e-5, "{g} vs {w}");
    }

    // Train mode: batch statistics, and the running averages move as PyTorch's do.
    set_train(&mut m, true);
    let y = no_grad(|| m.forward(&the_input()));
    assert_close(&y, &expected("expected.train"), 2e-5);
    let bn = named_state(&mut m);
    assert_close(&bn.0, &expected("expected.train_running_mean"), 1e-6);
    assert_close(&bn.1, &expected("expected.train_running_var"), 1e-5);
    assert_eq!(bn.2, 8, "num_batches_tracked 7 + 1");
}

/// stem.1's running mean, running var and counter.
fn named_state(m: &mut Tiny) -> (Tensor, Tensor, u64) {
    let mut out = (Tensor::zeros(&[0]), Tensor::zeros(&[0]), 0);
    focal_nn::for_each_named(m, |name, slot| match (name, slot) {
        ("stem.1.running_mean", focal_nn::Slot::Buffer(t)) => out.0 = t.clone(),
        ("stem.1.running_var", focal_nn::Slot::Buffer(t)) => out.1 = t.clone(),
        ("stem.1.num_batches_tracked", focal_nn::Slot::Counter(c)) => out.2 = *c,
        _ => {}
    });
    out
}

#[test]
fn export_then_import_round_trips_bitwise() {
    let dir = temp_dir("roundtrip");
    let mut a = Tiny::new(5, &mut Rng::new(1));
    // Move the BatchNorm statistics and counter away from their initial values.
    let _ = no_grad(|| a.forward(&the_input()));
    let path = dir.join("a.safetensors");
    export_safetensors(&mut a, &path, None).unwrap();
    let mut b = Tiny::new(5, &mut Rng::new(2));
    let report = import_safetensors(&mut b, &path, &ImportOptions::new().strict(true)).unwrap();
    assert_eq!(report.loaded.len(), 16);
    assert!(report.converted.is_empty() && report.skipped.is_empty());
    let state = TrainState::default();
    assert_eq!(
        Checkpoint::capture(&mut a, None, &state, "").to_bytes(),
        Checkpoint::capture(&mut b, None, &state, "").to_bytes()
    );
    // Exporting again gives the same bytes.
    assert_eq!(
        safetensors_bytes(&mut b, None).unwrap(),
        std::fs::read(&path).unwrap()
    );
    // If asked, leave a copy for PyTorch (see the comment below this test).
    if let Ok(out) = std::env::var("FOCAL_NN_EXPORT_DIR") {
        let mut c = Tiny::new(5, &mut Rng::new(7));
        let _ = no_grad(|| c.forward(&the_input())); // one train-mode pass: BN stats move
        set_train(&mut c, false);
        let y = no_grad(|| c.forward(&the_input()));
        export_safetensors(
            &mut c,
            &Path::new(&out).join("focal_tiny.safetensors"),
            None,
        )
        .unwrap();
        println!("focal eval output of the exported model: {:?}", y.data());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// focal's export loads in PyTorch: this was run by hand (no Python in the tests).
//
//   FOCAL_NN_EXPORT_DIR=/tmp cargo test --release -p focal-nn --test weights \
//       export_then_import -- --nocapture
//   python tests/fixtures/check_focal_export.py /tmp/focal_tiny.safetensors
//
// (with a Python that has torch and safetensors, `pip install torch safetensors`; the script loads the file with `load_state_dict(strict=True)` into the script's
// `Tiny` and runs it in eval mode on the same input). Output:
//
//   focal eval output of the exported model: [-0.8224846, -0.5062399, -0.013658617, 0.13626176,
//       -0.28979748, -0.045599062, -0.37841058, -0.9044803, 0.035263754, -0.710814]
//   load_state_dict(strict=True): <All keys matched successfully>
//   dtypes: ['torch.float32', 'torch.int64']
//   torch eval output: tensor([[-0.8224847, -0.5062400, -0.0136585,  0.1362617, -0.2897973],
//           [-0.0455992, -0.3784107, -0.9044802,  0.0352638, -0.7108139]])
//
// PyTorch accepts every name, shape and type of focal's export (num_batches_tracked as int64)
// and computes the same outputs to within 2e-7.

#[test]
fn the_report_lists_unmatched_missing_and_mismatched_names() {
    // A model with 3 classes instead of 5, no frozen BatchNorm, and an extra layer.
    struct Other {
        stem: Sequential,
        block: Sequential,
        head: Linear,
        extra: Conv2d,
    }
    impl Module for Other {
        fn visit(&mut self, v: &mut dyn Visitor) {
            v.child("stem", &mut self.stem);
            v.child("block", &mut self.block);
            v.child("head", &mut self.head);
            v.child("extra", &mut self.extra);
        }
    }
    let rng = &mut Rng::new(3);
    let t = Tiny::new(3, rng);
    let mut m = Other {
        stem: t.stem,
        block: t.block,
        head: t.head,
        extra: Conv2d::new(1, 1, 1, rng),
    };
    let before: Vec<Vec<f32>> = named_params(&mut m)
        .iter()
        .map(|(_, p)| p.value.to_vec())
        .collect();
    let path = fixture("tiny_torch.safetensors");
    // Strict: an error naming the file and every problem, and nothing loaded.
    let opts = ImportOptions::new().rename(skip_expected).strict(true);
    let e = import_safetensors(&mut m, &path, &opts)
        .unwrap_err()
        .chain();
    println!("{e}");
    assert!(e.contains("tiny_torch.safetensors"), "{e}");
    assert!(
        e.contains("head.weight: file [5, 512], model [3, 512]"),
        "{e}"
    );
    assert!(
        e.contains("missing from the file: extra.weight, extra.bias"),
        "{e}"
    );
    assert!(
        e.contains("not in the model: frozen.bias, frozen.running_mean"),
        "{e}"
    );
    let after: Vec<Vec<f32>> = named_params(&mut m)
        .iter()
        .map(|(_, p)| p.value.to_vec())
        .collect();
    assert_eq!(before, after);
    // Not strict: the same lists, and what matches is loaded.
    let opts = ImportOptions::new().rename(skip_expected);
    let r = import_safetensors(&mut m, &path, &opts).unwrap();
    assert_eq!(r.missing, ["extra.weight", "extra.bias"]);
    assert_eq!(
        r.unexpected,
        [
            "frozen.bias",
            "frozen.running_mean",
            "frozen.running_var",
            "frozen.weight"
        ]
    );
    let names: Vec<&str> = r.shape_mismatches.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["head.bias", "head.weight"]);
    assert_eq!(r.loaded.len(), 16 - 4 - 2);
    assert_ne!(before[0], named_params(&mut m)[0].1.value.to_vec());
}

#[test]
fn a_transform_can_remap_a_classifier() {
    // Keep classes 0, 2 and 4 of the file's 5 (RetinaNet does this for 91 COCO ids → 80).
    let keep = [0usize, 2, 4];
    let mut m = Tiny::new(3, &mut Rng::new(4));
    let opts = ImportOptions::new()
        .rename(skip_expected)
        .transform(|name, t, _model_shape| {
            Ok(if name.starts_with("head.") {
                t.index_select(0, &keep)
            } else {
                t
            })
        })
        .strict(true);
    let r = import_safetensors(&mut m, &fixture("tiny_torch.safetensors"), &opts).unwrap();
    assert!(r.is_complete());
    let w = expected("head.weight");
    let got = m.head.weight.value.data();
    for (row, &k) in keep.iter().enumerate() {
        assert_eq!(
            &got[row * 512..(row + 1) * 512],
            &w.data()[k * 512..(k + 1) * 512]
        );
    }
    set_train(&mut m, false);
    let y = no_grad(|| m.forward(&the_input()));
    let full = expected("expected.eval");
    for n in 0..2 {
        for (j, &k) in keep.iter().enumerate() {
            assert!((y.data()[n * 3 + j] - full.data()[n * 5 + k]).abs() < 2e-5);
        }
    }
}

#[test]
fn half_bfloat_and_double_are_converted_as_pytorch_does() {
    let all = read_safetensors(&fixture("dtypes.safetensors")).unwrap();
    let get = |name: &str| all.iter().find(|(n, _, _)| n == name).unwrap().1.clone();
    for ty in ["half", "bfloat", "double"] {
        let (FileTensor::Float(a), FileTensor::Float(b)) = (get(ty), get(&format!("{ty}.as_f32")))
        else {
            panic!("{ty} not read as floats")
        };
        let bits = |t: &Tensor| t.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{ty}");
    }
    let FileTensor::Int(shape, v) = get("long") else {
        panic!("long not read as integers")
    };
    assert_eq!((shape, v), (vec![3], vec![3, -4, 5]));
    // Importing notes the conversions and skips the integer tensor.
    struct Three(focal_nn::Param, focal_nn::Param, focal_nn::Param);
    impl Module for Three {
        fn visit(&mut self, v: &mut dyn Visitor) {
            v.param("half", &mut self.0);
            v.param("bfloat", &mut self.1);
            v.param("double", &mut self.2);
        }
    }
    let p = || focal_nn::Param::new(Tensor::zeros(&[6]));
    let mut m = Three(p(), p(), p());
    let opts = ImportOptions::new().rename(|n| (!n.ends_with(".as_f32")).then(|| n.to_string()));
    let r = import_safetensors(&mut m, &fixture("dtypes.safetensors"), &opts).unwrap();
    assert!(r.is_complete());
    let conv: Vec<(&str, &str)> = r
        .converted
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        conv,
        [("bfloat", "BF16"), ("double", "F64"), ("half", "F16")]
    );
    assert!(r
        .skipped
        .iter()
        .any(|(n, why)| n == "long" && why.contains("integer")));
    assert_eq!(m.0.value.data()[4], 5.9604645e-8);
}

#[test]
fn unreadable_files_give_errors_naming_them() {
    let dir = temp_dir("bad");
    let mut m = Tiny::new(5, &mut Rng::new(1));
    for (name, bytes) in [
        ("empty.safetensors", vec![]),
        ("short.safetensors", vec![1, 2, 3]),
        ("huge-header.safetensors", u64::MAX.to_le_bytes().to_vec()),
        (
            "garbage.safetensors",
            b"\x10\0\0\0\0\0\0\0{not json at all}".to_vec(),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let e = import_safetensors(&mut m, &path, &ImportOptions::new()).unwrap_err();
        assert!(e.chain().contains(name), "{e}");
        println!("{e}");
    }
    let e = import_safetensors(
        &mut m,
        &dir.join("absent.safetensors"),
        &ImportOptions::new(),
    )
    .unwrap_err();
    assert!(e.chain().contains("absent.safetensors"));
    // Writing into a folder that does not exist.
    let e = export_safetensors(&mut m, &dir.join("no/such.safetensors"), None).unwrap_err();
    assert!(e.chain().contains("no/such.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
    let _ = Layer::forward(&mut ReLU, &Tensor::zeros(&[1])); // Layer is object-safe and used
}
