//! Helpers shared by the tests of the ops: the unit tests in `ops/` and the integration
//! tests in `engine/tests/` (hence public, like `gradcheck`'s input generators).

use crate::gradcheck::case::randn;
use crate::rng::Rng;
use crate::tape::{backward_with, ParamId};
use crate::tensor::Tensor;

/// The output of `f` on tracked copies of `inputs`, then the gradient of every input for
/// a random upstream gradient drawn with `seed`, all as bits (so that `==` compares
/// exactly): what the tests of a fused op compare against the ops it fuses, and the
/// determinism tests across thread counts.
pub fn output_and_gradient_bits(
    inputs: &[Tensor],
    seed: u64,
    f: impl Fn(&[Tensor]) -> Tensor,
) -> Vec<Vec<u32>> {
    let ids: Vec<ParamId> = inputs.iter().map(|_| ParamId::fresh()).collect();
    let tracked: Vec<Tensor> = inputs
        .iter()
        .zip(&ids)
        .map(|(x, &id)| x.track(id))
        .collect();
    let y = f(&tracked);
    let upstream = randn(&mut Rng::new(seed), y.shape());
    let grads = backward_with(&y, upstream);
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
    let mut out = vec![bits(&y)];
    out.extend(
        ids.iter()
            .map(|&id| bits(grads.get(id).expect("a gradient per input"))),
    );
    out
}
