//! Where the time of a step goes, per op kind: the analogue of torch.profiler's key
//! averages, behind `focal bench train-step --profile`.
//!
//! Off by default (one relaxed atomic load per op when off). When on:
//!
//! - **Forward.** Every op ends by calling [`crate::tape::record`] (tracked or not,
//!   under `no_grad` too), which calls [`forward_done`]: the op's forward time is the
//!   time since the previous op ended on the same thread, or since the last [`mark`]
//!   (the caller marks where work that is not an op ends, so that it is not counted).
//!   An op built from other ops counts only its own work after the last of them.
//! - **Backward.** The backward walk (`tape::backward_with`) times each node's gradient
//!   closure and the accumulation of its results into its inputs' gradients, for the
//!   node's op ([`backward_done`]); ops that a gradient closure calls on the walking
//!   thread are part of that time, not forward calls of their own.
//! - **FLOPs** (multiply-adds × 2) are counted for the GEMM-shaped ops only, as
//!   torch.profiler does: conv2d `2·N·O·OH·OW·(C/G)·KH·KW` forward, that again for each
//!   of the input and weight gradients computed; matmul `2·M·N·K`, likewise. Winograd
//!   convolutions are counted at the direct convolution's FLOPs (an effective rate).
//!
//! Times are summed over threads: ops that run inside parallel tasks (a batch cut into
//! shards) can add up to more than the wall time. The totals are process-wide.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::op::Op;

static ENABLED: AtomicBool = AtomicBool::new(false);
static TOTALS: Mutex<BTreeMap<Op, OpStats>> = Mutex::new(BTreeMap::new());

thread_local! {
    /// When the last op (or mark) on this thread ended.
    static LAST: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    /// Whether this thread is inside the backward walk, whose gradient closures may call
    /// ops: their time belongs to the backward of the node being processed.
    static IN_BACKWARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (the backward walk) with the ops it calls on this thread counted as part of
/// the backward time of the node being processed, not as forward calls; marks the
/// thread when done.
pub(crate) fn in_backward<R>(f: impl FnOnce() -> R) -> R {
    let outer = IN_BACKWARD.with(|b| b.replace(true));
    let r = f();
    IN_BACKWARD.with(|b| b.set(outer));
    if enabled() {
        mark();
    }
    r
}

/// What one op kind cost, summed over its calls.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpStats {
    /// Forward calls.
    pub calls: u64,
    pub forward_ns: u64,
    pub backward_ns: u64,
    /// Multiply-adds × 2 of the forward calls and of the gradients computed (0 for
    /// the ops that are not GEMM-shaped).
    pub forward_flops: f64,
    pub backward_flops: f64,
}

/// Starts (or stops) collecting. Starting also marks this thread.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
    if on {
        mark();
    }
}

/// Whether collecting.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Forgets everything collected so far.
pub fn reset() {
    lock().clear();
}

/// Everything collected since the last [`reset`], by op kind.
pub fn totals() -> BTreeMap<Op, OpStats> {
    lock().clone()
}

/// Marks the end of work that is not an op on this thread: the next op's forward time
/// starts here.
pub fn mark() {
    LAST.with(|l| l.set(Some(Instant::now())));
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<Op, OpStats>> {
    // A panic elsewhere while holding the lock leaves plain numbers behind: keep them.
    TOTALS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forward FLOPs of `op` from its output and input shapes.
fn forward_flops(op: Op, out: &[usize], inputs: &[&[usize]]) -> f64 {
    let numel = |s: &[usize]| s.iter().product::<usize>() as f64;
    match op {
        // (N, O, OH, OW) outputs, each a sum over the weight's (C/G)·KH·KW taps.
        Op::Conv2d | Op::Conv2dRelu => 2.0 * numel(out) * numel(&inputs[1][1..]),
        // (.., M, N) outputs, each a sum over K, the last axis of the left operand.
        Op::Matmul => 2.0 * numel(out) * inputs[0].last().copied().unwrap_or(0) as f64,
        _ => 0.0,
    }
}

/// Called by `tape::record` as every op ends: counts the call, its forward time (since
/// the last op or mark on this thread) and FLOPs. `needs` says which inputs will get a
/// gradient (none when nothing is recorded), for the backward FLOPs.
pub(crate) fn forward_done(op: Op, out: &[usize], inputs: &[&[usize]], needs: &[bool]) {
    if !enabled() || IN_BACKWARD.with(|b| b.get()) {
        return;
    }
    let now = Instant::now();
    let since = LAST.with(|l| l.replace(Some(now)));
    let ns = since.map_or(0, |t| now.duration_since(t).as_nanos() as u64);
    let f = forward_flops(op, out, inputs);
    // One product per differentiated GEMM operand (the bias of a conv is a sum).
    let grads = needs.iter().take(2).filter(|&&n| n).count() as f64;
    let mut totals = lock();
    let s = totals.entry(op).or_default();
    s.calls += 1;
    s.forward_ns += ns;
    s.forward_flops += f;
    s.backward_flops += f * grads;
}

/// Called by the backward walk after the gradient of one node of `op` took `ns`.
pub(crate) fn backward_done(op: Op, ns: u64) {
    if !enabled() {
        return;
    }
    lock().entry(op).or_default().backward_ns += ns;
}

/// One row of the profile table.
#[derive(Clone, Debug, PartialEq)]
pub struct ProfileRow {
    /// The op's name, or "(outside ops)" for the rest of the step.
    pub name: String,
    /// Per step.
    pub calls: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub gflop: f64,
    /// GFLOP over (forward + backward) seconds; 0 where no FLOPs are counted.
    pub gflops: f64,
    /// (forward + backward) over the step's time, in percent.
    pub share: f64,
}

/// The table for `totals` collected over `steps` steps that took `step_ms` each (the
/// mean): one row per op kind, most expensive first, then "(outside ops)" for the
/// step's time no op accounts for (data, matching, optimiser, ...), so that the shares
/// add up to 100 %. Where ops ran on several threads at once their sum can exceed the
/// step; the last row is then negative.
pub fn table(totals: &BTreeMap<Op, OpStats>, steps: usize, step_ms: f64) -> Vec<ProfileRow> {
    let per = steps.max(1) as f64;
    let mut rows: Vec<ProfileRow> = totals
        .iter()
        .map(|(op, s)| {
            let (f, b) = (
                s.forward_ns as f64 / 1e6 / per,
                s.backward_ns as f64 / 1e6 / per,
            );
            let gflop = (s.forward_flops + s.backward_flops) / 1e9 / per;
            ProfileRow {
                name: op.name().to_string(),
                calls: s.calls as f64 / per,
                forward_ms: f,
                backward_ms: b,
                gflop,
                gflops: if f + b > 0.0 {
                    gflop / ((f + b) / 1e3)
                } else {
                    0.0
                },
                share: 100.0 * (f + b) / step_ms,
            }
        })
        .collect();
    rows.sort_by(|a, b| (b.forward_ms + b.backward_ms).total_cmp(&(a.forward_ms + a.backward_ms)));
    let in_ops: f64 = rows.iter().map(|r| r.forward_ms + r.backward_ms).sum();
    rows.push(ProfileRow {
        name: "(outside ops)".to_string(),
        calls: 0.0,
        forward_ms: step_ms - in_ops,
        backward_ms: 0.0,
        gflop: 0.0,
        gflops: 0.0,
        share: 100.0 * (step_ms - in_ops) / step_ms,
    });
    rows
}

/// The table as text, with a header and a total line.
pub fn table_text(rows: &[ProfileRow]) -> String {
    let mut s = format!(
        "{:<22} {:>7} {:>11} {:>11} {:>9} {:>9} {:>7}\n",
        "op", "calls", "forward ms", "backward ms", "GFLOP", "GFLOP/s", "share"
    );
    let dash = |v: f64, text: String| if v > 0.0 { text } else { "-".to_string() };
    for r in rows {
        s.push_str(&format!(
            "{:<22} {:>7} {:>11.1} {:>11.1} {:>9} {:>9} {:>6.1}%\n",
            r.name,
            dash(r.calls, format!("{:.0}", r.calls)),
            r.forward_ms,
            r.backward_ms,
            dash(r.gflop, format!("{:.2}", r.gflop)),
            dash(r.gflops, format!("{:.1}", r.gflops)),
            r.share
        ));
    }
    let total: f64 = rows.iter().map(|r| r.share).sum();
    let ms: f64 = rows.iter().map(|r| r.forward_ms + r.backward_ms).sum();
    s.push_str(&format!(
        "{:<22} {:>7} {:>23.1} {:>9} {:>9} {:>6.1}%\n",
        "total (step)", "", ms, "", "", total
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_of_the_gemm_shaped_ops() {
        // conv: (2, 4, 5, 5) outputs of a (4, 3, 3, 3) weight: 2·200·27.
        let f = forward_flops(Op::Conv2d, &[2, 4, 5, 5], &[&[2, 3, 7, 7], &[4, 3, 3, 3]]);
        assert_eq!(f, 2.0 * 200.0 * 27.0);
        // matmul (2, 3)·(3, 5): 2·10·3... and (2, 5) outputs.
        assert_eq!(
            forward_flops(Op::Matmul, &[2, 5], &[&[2, 3], &[3, 5]]),
            60.0
        );
        assert_eq!(forward_flops(Op::Relu, &[2, 5], &[&[2, 5]]), 0.0);
    }

    #[test]
    fn the_table_adds_up_to_the_step() {
        let mut t = BTreeMap::new();
        t.insert(
            Op::Conv2d,
            OpStats {
                calls: 4,
                forward_ns: 6_000_000,
                backward_ns: 10_000_000,
                forward_flops: 2e9,
                backward_flops: 4e9,
            },
        );
        t.insert(
            Op::Relu,
            OpStats {
                calls: 2,
                forward_ns: 2_000_000,
                backward_ns: 2_000_000,
                ..OpStats::default()
            },
        );
        // Two steps of 10 ms: conv 8 ms, relu 2 ms per step... of 10 ms is 80 % and 20 %.
        let rows = table(&t, 2, 10.0);
        assert_eq!(rows[0].name, "conv2d");
        assert_eq!(
            (rows[0].calls, rows[0].forward_ms, rows[0].backward_ms),
            (2.0, 3.0, 5.0)
        );
        assert!((rows[0].gflop - 3.0).abs() < 1e-12);
        assert!((rows[0].gflops - 375.0).abs() < 1e-9);
        assert!((rows[0].share - 80.0).abs() < 1e-9);
        assert!((rows[1].share - 20.0).abs() < 1e-9);
        assert_eq!(rows[2].name, "(outside ops)");
        assert!(rows[2].share.abs() < 1e-9);
        let text = table_text(&rows);
        assert!(text.contains("conv2d") && text.contains("100.0%"), "{text}");
    }
}
