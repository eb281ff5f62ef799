//! The tape: reverse-mode automatic differentiation as a list of nodes.
//!
//! While recording, every op whose inputs include a tracked tensor appends one [`Node`]
//! to this thread's tape. A node's index is assigned when it is pushed, and an op can only
//! consume tensors that already exist, so **index order is a topological order**: the
//! backward pass is a single loop from the loss's node down to node 0, with no sorting
//! and no recursion.
//!
//! A node stores the op, its output shape, the node of each input (or none for a
//! constant), and a boxed closure holding exactly what that op's backward needs (for
//! `mul` the two inputs; for `add` only the shapes). The closure is called once with the
//! gradient of the node's output and returns one gradient per input.
//!
//! [`backward`] takes the nodes out of the tape (the tape is empty again afterwards),
//! seeds the loss, and walks down:
//! - the first gradient reaching a node is stored as it is; later ones are added to it;
//! - a node's gradient is dropped as soon as the node's backward has consumed it, and the
//!   node itself (with its saved tensors) is dropped right after, so activation memory is
//!   released during the walk, from the top of the network down;
//! - leaves are parameters ([`ParamId`]); their gradients are the only ones returned.
//!
//! Leaves enter the tape through [`crate::Tensor::track`]. Under [`no_grad`] nothing is
//! recorded at all.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::op::Op;
use crate::shape::ShapeFmt;
use crate::tensor::Tensor;

/// The identity of a trainable leaf (a parameter), stable across steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub u64);

static NEXT_PARAM: AtomicU64 = AtomicU64::new(1);

impl ParamId {
    /// A process-unique id.
    pub fn fresh() -> ParamId {
        ParamId(NEXT_PARAM.fetch_add(1, Ordering::Relaxed))
    }
}

/// Where a tracked tensor sits on the tape. `generation` changes every time the tape is
/// cleared, so a tensor kept from an earlier step is recognised instead of silently
/// pointing at an unrelated node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeRef {
    pub(crate) index: usize,
    pub(crate) generation: u64,
}

/// Computes the gradient of each input from the gradient of the output, which it
/// receives by value: the walk has no further use for it, so an op may reuse its buffer
/// (the fused ReLU ops mask it in place) and it is freed as soon as the op is done with it.
/// Returns one entry per input, `None` where the input needs no gradient.
pub type BackwardFn = Box<dyn FnOnce(Tensor) -> Vec<Option<Tensor>>>;

enum NodeKind {
    Leaf(ParamId),
    Op(Op, BackwardFn),
}

struct Node {
    kind: NodeKind,
    shape: Vec<usize>,
    parents: Vec<Option<usize>>,
}

#[derive(Default)]
struct Tape {
    nodes: Vec<Node>,
    generation: u64,
}

thread_local! {
    static TAPE: RefCell<Tape> = RefCell::new(Tape::default());
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops currently record onto the tape.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous recording state when dropped (see [`no_grad`]).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    pub fn new() -> NoGradGuard {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Runs `f` without recording anything: outputs are untracked and no activation is
/// kept for a backward pass. This is the inference path.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

fn stale(what: &str, r: NodeRef, current: u64) -> ! {
    panic!(
        "{what}: a tensor recorded on an earlier tape (generation {}, now {current}) was used \
         after the tape was cleared by backward() or clear_tape(); detach() it or compute it again",
        r.generation
    )
}

impl Tensor {
    /// Marks this value as the trainable leaf `id` and records it: gradients reaching it
    /// are returned by [`backward`] under `id`. Under [`no_grad`] it returns an untracked copy.
    ///
    /// Using the same parameter several times in one step (RetinaNet's heads are shared
    /// by all pyramid levels) is fine: each use adds a leaf, and their gradients are summed.
    pub fn track(&self, id: ParamId) -> Tensor {
        let mut out = self.detach();
        if !is_grad_enabled() {
            return out;
        }
        TAPE.with(|t| {
            let mut tape = t.borrow_mut();
            let index = tape.nodes.len();
            tape.nodes.push(Node {
                kind: NodeKind::Leaf(id),
                shape: self.shape.clone(),
                parents: Vec::new(),
            });
            out.node = Some(NodeRef {
                index,
                generation: tape.generation,
            });
        });
        out
    }
}

/// Records `out` as the result of `op` applied to `inputs`.
///
/// If no input is tracked, or recording is off, `out` is returned untouched and `make`
/// is never called, so no tensor is saved. Otherwise `make` receives, for each input,
/// whether it needs a gradient, and returns the backward closure.
pub fn record(
    op: Op,
    mut out: Tensor,
    inputs: &[&Tensor],
    make: impl FnOnce(&[bool]) -> BackwardFn,
) -> Tensor {
    if inputs.iter().all(|t| t.node.is_none()) || !is_grad_enabled() {
        if crate::profile::enabled() {
            let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
            crate::profile::forward_done(op, out.shape(), &shapes, &[]);
        }
        return out;
    }
    let generation = TAPE.with(|t| t.borrow().generation);
    let parents: Vec<Option<usize>> = inputs
        .iter()
        .map(|t| {
            t.node.map(|r| {
                if r.generation != generation {
                    stale(op.name(), r, generation);
                }
                r.index
            })
        })
        .collect();
    let needs: Vec<bool> = parents.iter().map(|p| p.is_some()).collect();
    let backward = make(&needs);
    if crate::profile::enabled() {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.shape()).collect();
        crate::profile::forward_done(op, out.shape(), &shapes, &needs);
    }
    out.node = None;
    TAPE.with(|t| {
        let mut tape = t.borrow_mut();
        let index = tape.nodes.len();
        tape.nodes.push(Node {
            kind: NodeKind::Op(op, backward),
            shape: out.shape.clone(),
            parents,
        });
        out.node = Some(NodeRef { index, generation });
    });
    out
}

/// The gradients of the parameters reached by one backward pass.
#[derive(Default)]
pub struct Gradients {
    map: HashMap<ParamId, Tensor>,
}

impl Gradients {
    pub fn get(&self, id: ParamId) -> Option<&Tensor> {
        self.map.get(&id)
    }

    pub fn remove(&mut self, id: ParamId) -> Option<Tensor> {
        self.map.remove(&id)
    }

    pub fn insert(&mut self, id: ParamId, grad: Tensor) {
        self.map.insert(id, grad);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds the gradients of `other` (another backward pass over the same parameters, e.g.
    /// another shard of the batch) to these: for each parameter, `self + other`. Merging
    /// shards one after the other in a fixed order therefore gives the same bits every time.
    pub fn merge(&mut self, other: Gradients) {
        for (id, grad) in other.map {
            self.accumulate(id, grad);
        }
    }

    fn accumulate(&mut self, id: ParamId, grad: Tensor) {
        match self.map.get_mut(&id) {
            Some(acc) => acc.add_assign(&grad),
            None => {
                self.map.insert(id, grad);
            }
        }
    }
}

/// Backpropagates from a scalar `loss` (seed 1) and clears the tape.
pub fn backward(loss: &Tensor) -> Gradients {
    assert_eq!(
        loss.numel(),
        1,
        "backward: the loss must hold a single value, got shape {}; use backward_with for a \
         non-scalar output",
        ShapeFmt(loss.shape())
    );
    let seed = Tensor::ones(loss.shape());
    backward_with(loss, seed)
}

/// Backpropagates from `out` with the upstream gradient `seed` (same shape as `out`) and
/// clears the tape. Returns the gradient of every parameter that `out` depends on.
pub fn backward_with(out: &Tensor, seed: Tensor) -> Gradients {
    assert_eq!(
        out.shape(),
        seed.shape(),
        "backward_with: seed shape {} differs from output shape {}",
        ShapeFmt(seed.shape()),
        ShapeFmt(out.shape())
    );
    let r = out.node.expect(
        "backward: the tensor was not recorded on the tape (it depends on no tracked \
         parameter, or was computed under no_grad)",
    );
    let (mut nodes, generation) = TAPE.with(|t| {
        let mut tape = t.borrow_mut();
        let generation = tape.generation;
        tape.generation += 1;
        (std::mem::take(&mut tape.nodes), generation)
    });
    if r.generation != generation {
        stale("backward", r, generation);
    }
    // Nodes recorded after `out` cannot contribute to it.
    nodes.truncate(r.index + 1);
    let _no_record = NoGradGuard::new();
    crate::profile::in_backward(|| walk(nodes, r, seed))
}

/// The reverse walk of [`backward_with`] over `nodes` (the tape up to `r`).
fn walk(mut nodes: Vec<Node>, r: NodeRef, seed: Tensor) -> Gradients {
    let mut grads: Vec<Option<Tensor>> = Vec::with_capacity(nodes.len());
    grads.resize_with(nodes.len(), || None);
    grads[r.index] = Some(seed.detach());
    let mut result = Gradients::default();
    while let Some(node) = nodes.pop() {
        let index = nodes.len();
        // A node no gradient reached is dropped here, with its saved tensors.
        let Some(grad) = grads[index].take() else {
            continue;
        };
        match node.kind {
            NodeKind::Leaf(id) => result.accumulate(id, grad),
            NodeKind::Op(op, backward) => {
                let started = crate::profile::enabled().then(std::time::Instant::now);
                let input_grads = backward(grad);
                assert_eq!(
                    input_grads.len(),
                    node.parents.len(),
                    "{}: backward returned {} gradients for {} inputs",
                    op.name(),
                    input_grads.len(),
                    node.parents.len()
                );
                for (parent, g) in node.parents.iter().zip(input_grads) {
                    let (Some(p), Some(g)) = (parent, g) else {
                        continue;
                    };
                    assert_eq!(
                        g.shape(),
                        &nodes[*p].shape[..],
                        "{}: backward produced a gradient of shape {} for an input of shape {}",
                        op.name(),
                        ShapeFmt(g.shape()),
                        ShapeFmt(&nodes[*p].shape)
                    );
                    match &mut grads[*p] {
                        Some(acc) => acc.add_assign(&g),
                        slot @ None => *slot = Some(g),
                    }
                }
                if let Some(t) = started {
                    crate::profile::backward_done(op, t.elapsed().as_nanos() as u64);
                }
            }
        }
    }
    result
}

/// Drops everything recorded so far (for example after a forward pass whose loss is
/// only printed). Tensors recorded before become stale.
pub fn clear_tape() {
    TAPE.with(|t| {
        let mut tape = t.borrow_mut();
        tape.nodes.clear();
        tape.generation += 1;
    });
}

/// Number of nodes on this thread's tape.
pub fn tape_len() -> usize {
    TAPE.with(|t| t.borrow().nodes.len())
}

/// The ops recorded so far, in tape order (leaves excluded).
pub fn recorded_ops() -> Vec<Op> {
    TAPE.with(|t| {
        t.borrow()
            .nodes
            .iter()
            .filter_map(|n| match n.kind {
                NodeKind::Op(op, _) => Some(op),
                NodeKind::Leaf(_) => None,
            })
            .collect()
    })
}

/// The tape as text, one node per line: index, op, output shape and parents.
///
/// ```text
/// #0  param            [4, 3]
/// #1  matmul           [2, 3]      <- const [2, 4], #0
/// #2  relu             [2, 3]      <- #1
/// ```
pub fn tape_summary() -> String {
    TAPE.with(|t| {
        let tape = t.borrow();
        let mut s = String::new();
        for (i, n) in tape.nodes.iter().enumerate() {
            let name = match &n.kind {
                NodeKind::Leaf(id) => format!("param {}", id.0),
                NodeKind::Op(op, _) => op.name().to_string(),
            };
            let _ = write!(
                s,
                "#{i:<4} {name:<18} {:<20}",
                ShapeFmt(&n.shape).to_string()
            );
            if !n.parents.is_empty() {
                let ps: Vec<String> = n
                    .parents
                    .iter()
                    .map(|p| match p {
                        Some(p) => format!("#{p}"),
                        None => "const".to_string(),
                    })
                    .collect();
                let _ = write!(s, " <- {}", ps.join(", "));
            }
            s.push('\n');
        }
        s
    })
}
