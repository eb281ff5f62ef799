//! The module tree: every parameter and buffer of a model under a hierarchical name.
//!
//! A model is a tree of structs. Each implements [`Module`] with a single method,
//! [`Module::visit`], that shows its parameters and buffers to a [`Visitor`] and descends
//! into its children inside named scopes:
//!
//! ```
//! use focal_nn::{Conv2d, Module, Visitor, named_params};
//! use focal_engine::Rng;
//!
//! struct Block { conv1: Conv2d, conv2: Conv2d }
//!
//! impl Module for Block {
//!     fn visit(&mut self, v: &mut dyn Visitor) {
//!         v.child("conv1", &mut self.conv1);
//!         v.scope("conv2", |v| self.conv2.visit(v)); // the same, spelled out
//!     }
//! }
//!
//! let mut rng = Rng::new(0);
//! let mut block = Block {
//!     conv1: Conv2d::new(3, 8, 3, &mut rng).padding(1),
//!     conv2: Conv2d::new(8, 8, 3, &mut rng).padding(1).no_bias(),
//! };
//! let names: Vec<String> = named_params(&mut block).into_iter().map(|(n, _)| n).collect();
//! assert_eq!(names, ["conv1.weight", "conv1.bias", "conv2.weight"]);
//! ```
//!
//! The names are PyTorch's `state_dict` keys (`layer1.0.conv1.weight`, `bn1.running_mean`),
//! so a torchvision model maps onto a focal model one to one.
//!
//! **The visiting order is the one fixed order** used by the optimisers, gradient clipping
//! and checkpoints: a reduction over parameters (the global gradient norm) adds them in
//! this order, whatever the thread count.

use std::collections::HashSet;

use focal_engine::Tensor;

use crate::param::Param;

/// Something holding parameters, buffers or child modules.
pub trait Module {
    /// Shows every parameter, buffer and counter to `v`, children inside `v.scope(..)` / `v.child(..)`.
    fn visit(&mut self, v: &mut dyn Visitor);
}

/// A list of modules named `0`, `1`, ... (PyTorch's `nn.ModuleList`, e.g. the FPN's
/// `inner_blocks`).
impl<T: Module> Module for Vec<T> {
    fn visit(&mut self, v: &mut dyn Visitor) {
        for (i, m) in self.iter_mut().enumerate() {
            v.child(&i.to_string(), m);
        }
    }
}

/// An optional module shows its entries when present and nothing otherwise.
impl<T: Module> Module for Option<T> {
    fn visit(&mut self, v: &mut dyn Visitor) {
        if let Some(m) = self {
            m.visit(v);
        }
    }
}

/// What walks a module tree. Only `enter`, `leave` and `param` are required; a visitor that
/// does not care about buffers, counters or the train/eval flag ignores them.
pub trait Visitor {
    /// Descends into the child called `name`.
    fn enter(&mut self, name: &str);
    /// Comes back up from the last [`Visitor::enter`].
    fn leave(&mut self);
    /// A parameter of the current module.
    fn param(&mut self, name: &str, p: &mut Param);
    /// A non-trainable tensor saved with the model (BatchNorm's running statistics, the
    /// affine of a frozen BatchNorm).
    fn buffer(&mut self, _name: &str, _t: &mut Tensor) {}
    /// An integer saved with the model (BatchNorm's `num_batches_tracked`, an int64 in
    /// PyTorch).
    fn counter(&mut self, _name: &str, _c: &mut u64) {}
    /// A layer whose behaviour differs between training and evaluation shows its flag here.
    fn training(&mut self, _flag: &mut bool) {}
}

impl dyn Visitor + '_ {
    /// Visits a child module under `name`: `v.scope("layer1", |v| self.layer1.visit(v))`.
    pub fn scope(&mut self, name: &str, f: impl FnOnce(&mut dyn Visitor)) {
        self.enter(name);
        f(self);
        self.leave();
    }

    /// Visits a child module under `name` (shorthand for the common case).
    pub fn child(&mut self, name: &str, m: &mut dyn Module) {
        self.enter(name);
        m.visit(self);
        self.leave();
    }
}

/// One entry of the tree, as seen by [`for_each_named`].
pub enum Slot<'a> {
    Param(&'a mut Param),
    Buffer(&'a mut Tensor),
    Counter(&'a mut u64),
}

/// Turns scopes into dotted names and hands every entry to a closure.
struct Named<F> {
    path: Vec<String>,
    f: F,
}

impl<F> Named<F> {
    fn full(&self, name: &str) -> String {
        let mut s = String::new();
        for p in &self.path {
            s.push_str(p);
            s.push('.');
        }
        s.push_str(name);
        s
    }
}

impl<F: FnMut(&str, Slot<'_>)> Visitor for Named<F> {
    fn enter(&mut self, name: &str) {
        self.path.push(name.to_string());
    }
    fn leave(&mut self) {
        self.path.pop().expect("Visitor::leave without enter");
    }
    fn param(&mut self, name: &str, p: &mut Param) {
        let n = self.full(name);
        (self.f)(&n, Slot::Param(p));
    }
    fn buffer(&mut self, name: &str, t: &mut Tensor) {
        let n = self.full(name);
        (self.f)(&n, Slot::Buffer(t));
    }
    fn counter(&mut self, name: &str, c: &mut u64) {
        let n = self.full(name);
        (self.f)(&n, Slot::Counter(c));
    }
}

/// Calls `f` with the full dotted name of every parameter, buffer and counter, in visiting
/// order.
pub fn for_each_named(m: &mut dyn Module, f: impl FnMut(&str, Slot<'_>)) {
    let mut v = Named {
        path: Vec::new(),
        f,
    };
    m.visit(&mut v);
    assert!(
        v.path.is_empty(),
        "a Module::visit entered a scope it did not leave"
    );
}

/// Every parameter with its full name, in visiting order. The `Param`s are copies (their
/// tensors share storage with the model's): use them to read ids, values and flags.
pub fn named_params(m: &mut dyn Module) -> Vec<(String, Param)> {
    let mut out = Vec::new();
    for_each_named(m, |name, slot| {
        if let Slot::Param(p) = slot {
            out.push((name.to_string(), p.clone()));
        }
    });
    out
}

/// Every buffer with its full name, in visiting order (tensors share storage).
pub fn named_buffers(m: &mut dyn Module) -> Vec<(String, Tensor)> {
    let mut out = Vec::new();
    for_each_named(m, |name, slot| {
        if let Slot::Buffer(t) = slot {
            out.push((name.to_string(), t.clone()));
        }
    });
    out
}

/// The number of values in all parameters (frozen ones included).
pub fn param_count(m: &mut dyn Module) -> usize {
    let mut n = 0;
    for_each_named(m, |_, slot| {
        if let Slot::Param(p) = slot {
            n += p.numel();
        }
    });
    n
}

/// The number of values in the parameters that train (not frozen).
pub fn trainable_param_count(m: &mut dyn Module) -> usize {
    let mut n = 0;
    for_each_named(m, |_, slot| {
        if let Slot::Param(p) = slot {
            if !p.frozen {
                n += p.numel();
            }
        }
    });
    n
}

/// Switches every layer to training (`true`) or evaluation (`false`) behaviour.
pub fn set_train(m: &mut dyn Module, training: bool) {
    struct SetTrain(bool);
    impl Visitor for SetTrain {
        fn enter(&mut self, _: &str) {}
        fn leave(&mut self) {}
        fn param(&mut self, _: &str, _: &mut Param) {}
        fn training(&mut self, flag: &mut bool) {
            *flag = self.0;
        }
    }
    m.visit(&mut SetTrain(training));
}

/// Whether `name` lies in the subtree `prefix` (`""` is the whole model; `"layer1"` matches
/// `layer1.0.conv1.weight` but not `layer10.weight`).
pub fn in_subtree(name: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || name == prefix
        || (name.len() > prefix.len()
            && name.starts_with(prefix)
            && name.as_bytes()[prefix.len()] == b'.')
}

/// Freezes every parameter in the subtree `prefix`: no gradient, skipped by the optimiser.
/// Returns how many parameters it froze (zero means the prefix matched nothing).
pub fn freeze(m: &mut dyn Module, prefix: &str) -> usize {
    set_frozen(m, prefix, true)
}

/// Undoes [`freeze`] for the subtree `prefix`. Returns how many parameters it touched.
pub fn unfreeze(m: &mut dyn Module, prefix: &str) -> usize {
    set_frozen(m, prefix, false)
}

fn set_frozen(m: &mut dyn Module, prefix: &str, frozen: bool) -> usize {
    let mut n = 0;
    for_each_named(m, |name, slot| {
        if let Slot::Param(p) = slot {
            if in_subtree(name, prefix) {
                p.frozen = frozen;
                n += 1;
            }
        }
    });
    n
}

/// Names that occur more than once in the tree (a bug in some `visit`). Checkpoints and
/// weight exchange refuse such a model.
pub fn duplicate_names(m: &mut dyn Module) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut dups = Vec::new();
    for_each_named(m, |name, _| {
        if !seen.insert(name.to_string()) {
            dups.push(name.to_string());
        }
    });
    dups
}
