//! Which algorithm a 3x3 convolution runs: the `--conv-algo` option.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::ops::conv::geometry::Geom;

/// How conv2d computes a convolution that Winograd can do (3x3, stride 1, dilation 1,
/// one group); every other convolution is always direct (im2col + GEMM).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ConvAlgo {
    /// Winograd where it measured faster than the direct kernels, with the tile size
    /// that measured faster (`auto_tile` in `algo.rs`); direct elsewhere.
    #[default]
    Auto,
    /// Always im2col + GEMM.
    Direct,
    /// Winograd on every eligible convolution, with the tile size that measured faster
    /// on its shape (`winograd_tile` in `algo.rs`).
    Winograd,
    /// Winograd F(2x2,3x3) on every eligible convolution.
    WinogradF2,
    /// Winograd F(4x4,3x3) on every eligible convolution.
    WinogradF4,
}

impl ConvAlgo {
    /// Every choice, in the order `--help` lists them.
    pub const ALL: [ConvAlgo; 5] = [
        ConvAlgo::Auto,
        ConvAlgo::Direct,
        ConvAlgo::Winograd,
        ConvAlgo::WinogradF2,
        ConvAlgo::WinogradF4,
    ];

    /// The name `--conv-algo` takes.
    pub fn name(self) -> &'static str {
        match self {
            ConvAlgo::Auto => "auto",
            ConvAlgo::Direct => "direct",
            ConvAlgo::Winograd => "winograd",
            ConvAlgo::WinogradF2 => "winograd-f2",
            ConvAlgo::WinogradF4 => "winograd-f4",
        }
    }

    /// The choice named `name`, or an error listing the names.
    pub fn from_name(name: &str) -> Result<ConvAlgo, String> {
        ConvAlgo::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = ConvAlgo::ALL.iter().map(|a| a.name()).collect();
                format!(
                    "unknown conv algorithm {name:?}: expected one of {}",
                    names.join(", ")
                )
            })
    }

    fn index(self) -> u8 {
        ConvAlgo::ALL.iter().position(|&a| a == self).unwrap() as u8
    }
}

/// The process-wide choice used by [`crate::conv2d`] (index into [`ConvAlgo::ALL`]).
static DEFAULT: AtomicU8 = AtomicU8::new(0);

/// Sets the algorithm every later [`crate::conv2d`] call uses (the CLI's
/// `--conv-algo`). Tests that compare algorithms call
/// [`crate::ops::conv::conv2d_with`] instead, which does not touch this setting.
pub fn set_conv_algo(algo: ConvAlgo) {
    DEFAULT.store(algo.index(), Ordering::Relaxed);
}

/// The algorithm [`crate::conv2d`] uses (`Auto` unless [`set_conv_algo`] was called).
pub fn conv_algo() -> ConvAlgo {
    ConvAlgo::ALL[DEFAULT.load(Ordering::Relaxed) as usize]
}

/// A Winograd tile size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileKind {
    /// F(2x2, 3x3).
    F2,
    /// F(4x4, 3x3).
    F4,
}

/// 3x3, stride 1, dilation 1, one group, and something to compute.
pub(crate) fn eligible(g: &Geom) -> bool {
    g.kh == 3
        && g.kw == 3
        && (g.sh, g.sw) == (1, 1)
        && (g.dh, g.dw) == (1, 1)
        && g.groups == 1
        && g.n * g.c * g.o * g.oh * g.ow > 0
}

/// Tiles of `m × m` outputs over the whole batch.
fn tiles(g: &Geom, m: usize) -> usize {
    g.n * g.oh.div_ceil(m) * g.ow.div_ceil(m)
}

/// Fewest F(4x4) tiles (over the batch) for F(4x4) to beat F(2x2); see [`auto_tile`].
pub(crate) const MIN_TILES_F4: usize = 128;
/// Fewest F(2x2) tiles for Winograd to beat the direct kernels.
pub(crate) const MIN_TILES_F2: usize = 128;
/// Fewest input and output channels for Winograd to beat the direct kernels.
pub(crate) const MIN_CHANNELS: usize = 128;
/// Smallest output plane (pixels), 32²: on 16² planes Winograd lost on the Intel Xeon
/// (Sapphire Rapids) at every channel count measured, and below 16² the direct kernels
/// batch the samples into one GEMM (`forward.rs`, `SMALL_PLANE`), which Winograd did not
/// beat on either CPU.
pub(crate) const MIN_PLANE: usize = 1024;

/// The tile size of `--conv-algo winograd`: F(4x4) when there are at least
/// [`MIN_TILES_F4`] of its tiles, else F(2x2) (see [`auto_tile`] for the measurements).
pub(crate) fn winograd_tile(g: &Geom) -> TileKind {
    if tiles(g, 4) >= MIN_TILES_F4 {
        TileKind::F4
    } else {
        TileKind::F2
    }
}

/// The rule of `--conv-algo auto`: Winograd with the tile of [`winograd_tile`] when
/// both channel counts are at least [`MIN_CHANNELS`], the output plane has at least
/// [`MIN_PLANE`] pixels (32²) and there are at least [`MIN_TILES_F2`] F(2x2) tiles; direct
/// otherwise.
///
/// Measured with `focal bench conv --preset grid --compare-algos
/// direct,winograd-f2,winograd-f4` (3x3 stride 1, C = O, batch 2, interleaved) on the
/// 2-core AMD EPYC Zen 5 machine (AVX-512 path), shared with other jobs (load 5-8): the
/// speed-up of forward + backward over the direct implicit-GEMM kernels (median wall
/// time; the CPU-time ratios agree within 0.06), F(2x2) / F(4x4):
///
/// | C = O | 8²          | 16²         | 32²         | 64²         |
/// |-------|-------------|-------------|-------------|-------------|
/// | 64    | 0.71 / 0.39 | 1.04 / 0.54 | 1.09 / 0.98 | 0.78 / 0.76 |
/// | 128   | 0.72 / 0.34 | 1.08 / 0.65 | 1.07 / 0.99 | 0.92 / 0.98 |
/// | 256   | 0.67 / 0.32 | 1.15 / 0.65 | 1.28 / 1.19 | 1.30 / 1.52 |
/// | 512   | 0.65 / 0.34 | 1.21 / 0.68 | 1.54 / 1.45 | 1.52 / 1.81 |
///
/// The same grid on the 2-core Intel Xeon (Sapphire Rapids, AVX-512 path), with the
/// transformed inputs written in the GEMM's panel order (`packed_inputs.rs`), one run
/// interleaved, load 6-7 from other jobs (CPU-time ratios where the wall times were
/// disturbed):
///
/// | C = O | 8²          | 16²         | 32²         | 64²         |
/// |-------|-------------|-------------|-------------|-------------|
/// | 64    | 0.38 / 0.17 | 0.85 / 0.39 | 0.78 / 0.84 | 0.71 / 0.82 |
/// | 128   | 0.49 / 0.20 | 0.87 / 0.56 | 0.96 / 1.05 | 0.85 / 0.93 |
/// | 256   | 0.45 / 0.21 | 0.90 / 0.51 | 1.10 / 1.25 | 1.18 / 1.42 |
/// | 512   | 0.44 / 0.19 | 0.91 / 0.55 | 1.25 / 1.18 | 1.38 / 1.79 |
///
/// Here the direct kernels win every 16² plane, and F(4x4) beats F(2x2) at 256 channels
/// from 128 of its tiles (32² at batch 2). The thresholds follow this CPU (the Zen 5
/// machine could not be measured again with the new layout): [`MIN_PLANE`] = 1024
/// (was 256: 16² planes won 1.15-1.21× on Zen 5, lost 0.66-0.91× here) and
/// [`MIN_TILES_F4`] = 128 (was 256: on Zen 5 F(2x2) led at 32², here F(4x4) does at 256
/// channels and trails at 512, both faster than direct).
///
/// With the forward kernel pipelined per chunk of tiles (`forward.rs`), the same grid on
/// the 2-core AMD EPYC Zen 3 (AVX2 path, 512 KiB of L2 per core), one run on a quiet host,
/// wall-time ratios (the CPU-time ones agree within 0.1 but for 256 at 32², 1.58 for F(4x4)):
///
/// | C = O | 8²          | 16²         | 32²         | 64²         |
/// |-------|-------------|-------------|-------------|-------------|
/// | 64    | 0.72 / 0.46 | 1.01 / 0.76 | 1.01 / 1.32 | 0.85 / 1.01 |
/// | 128   | 0.78 / 0.47 | 1.16 / 0.94 | 1.24 / 1.67 | 1.13 / 1.67 |
/// | 256   | 0.88 / 0.36 | 0.88 / 0.56 | 1.19 / 1.36 | 1.45 / 2.28 |
/// | 512   | 0.55 / 0.26 | 1.03 / 0.69 | 1.43 / 1.49 | 1.76 / 2.35 |
///
/// Here 128 channels win 1.67× with F(4x4) from 32² (on ResNet-18 at 512 px that is
/// layer2), where the Intel machine measured 1.05 and 0.93 with the phased kernel, so
/// [`MIN_CHANNELS`] = 128: a large gain on one CPU against a small loss, at most, on the
/// other. With 64 channels Winograd gains at most 1.32 here and loses 0.82-0.84 on the
/// Intel machine, on the large planes too, where the direct GEMMs are widest (the
/// transforms, which grow with `C + O`, cost as much as the multiplications saved), so
/// 64 channels stay direct. 8² planes at batch 2 (32 F(2x2) tiles) never win (the filter
/// transform and its packing, both `∝ C·O`, are spread over too few tiles); F(4x4) beats
/// F(2x2) with 512 of its tiles (64² at batch 2). On the 96-px default model at batch 8
/// every 3x3 conv has 64 channels or a plane under 1024 pixels: it stays direct, and
/// `focal train`'s default run is unchanged. With the earlier GEMM (matrixmultiply,
/// repacking the filters per chunk) 128 channels won 1.1-1.2× on Zen 5; our GEMM made
/// the direct kernels faster there. These
/// thresholds belong to this GEMM: measure again when it changes.
///
/// On the 2-core AMD EPYC Zen 4 (AVX-512 path, 1 MiB of L2 per core), once the
/// transforms ran their AVX2 build there (`simd.rs`: the AVX-512 build was slowed by
/// gathers and scatters), one run on a quiet host, wall-time ratios:
///
/// | C = O | 8²          | 16²         | 32²         | 64²         |
/// |-------|-------------|-------------|-------------|-------------|
/// | 64    | 0.75 / 0.53 | 0.95 / 0.63 | 0.99 / 1.23 | 1.06 / 1.70 |
/// | 128   | 0.62 / 0.43 | 1.13 / 0.73 | 1.18 / 1.49 | 1.14 / 1.48 |
/// | 256   | 0.64 / 0.33 | 1.09 / 0.70 | 1.63 / 1.47 | 1.23 / 1.98 |
/// | 512   | 0.65 / 0.28 | 1.31 / 0.71 | 1.49 / 1.69 | 1.63 / 2.25 |
///
/// Every choice of the rule gains here as well. The Zen 5 and Intel tables above were
/// measured with that AVX-512 build, so 64 channels on 32²+ planes (1.23-1.70× here)
/// may deserve Winograd there too; measure the Intel machine again before lowering
/// [`MIN_CHANNELS`].
///
/// The rule looks at shapes only, never at the instruction set, so that `auto` makes
/// the same choice, and a run the same bits, on every machine. (On the AVX2 path, where
/// the GEMM runs at half the rate, Winograd measured faster on far more shapes:
/// `docs/winograd.md`.)
pub(crate) fn auto_tile(g: &Geom) -> Option<TileKind> {
    let wins =
        g.c.min(g.o) >= MIN_CHANNELS && g.oh * g.ow >= MIN_PLANE && tiles(g, 2) >= MIN_TILES_F2;
    wins.then(|| winograd_tile(g))
}

/// The Winograd tile `algo` asks for on `g`, or `None` for the direct kernels.
pub(crate) fn choose(g: &Geom, algo: ConvAlgo) -> Option<TileKind> {
    if !eligible(g) {
        return None;
    }
    match algo {
        ConvAlgo::Direct => None,
        ConvAlgo::Auto => auto_tile(g),
        ConvAlgo::Winograd => Some(winograd_tile(g)),
        ConvAlgo::WinogradF2 => Some(TileKind::F2),
        ConvAlgo::WinogradF4 => Some(TileKind::F4),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv::Conv2dOptions;

    fn geom(n: usize, c: usize, o: usize, hw: usize, opts: Conv2dOptions) -> Geom {
        Geom::new(&[n, c, hw, hw], &[o, c, 3, 3], opts)
    }

    /// The rule on the layers of R18-FPN at 512 px (batch 2) and of the 96-px default
    /// model (batch 8), as the table of [`auto_tile`] says.
    #[test]
    fn auto_follows_the_measurements() {
        let p1 = Conv2dOptions::sp(1, 1);
        for (n, c, o, hw, want) in [
            (2, 64, 64, 128, None),                // layer1: 64 channels
            (2, 128, 128, 64, Some(TileKind::F4)), // layer2: 512 F(4x4) tiles
            (2, 128, 128, 32, Some(TileKind::F4)), // 128 channels, 128 F(4x4) tiles
            (2, 64, 128, 64, None),                // 64 input channels
            (2, 256, 256, 32, Some(TileKind::F4)), // layer3: 128 F(4x4) tiles
            (2, 512, 512, 16, None),               // layer4: a 16² plane
            (2, 256, 256, 16, None),               // head on P5: a 16² plane
            (1, 256, 256, 32, Some(TileKind::F2)), // 64 F(4x4) tiles
            (2, 256, 256, 64, Some(TileKind::F4)), // head on P3
            (2, 256, 720, 64, Some(TileKind::F4)), // class output on P3
            (2, 256, 36, 64, None),                // box output: 36 channels
            (2, 512, 512, 8, None),                // 32 F(2x2) tiles
            (8, 128, 128, 12, None),               // 96 px: plane under 256 pixels
            (8, 64, 64, 24, None),                 // 96 px layer1
        ] {
            let g = geom(n, c, o, hw, p1);
            assert_eq!(choose(&g, ConvAlgo::Auto), want, "{n}x{c}->{o} @{hw}");
        }
    }

    #[test]
    fn forced_choices_and_ineligible_shapes() {
        let g = geom(1, 8, 8, 5, Conv2dOptions::sp(1, 1));
        assert_eq!(choose(&g, ConvAlgo::Direct), None);
        assert_eq!(choose(&g, ConvAlgo::WinogradF2), Some(TileKind::F2));
        assert_eq!(choose(&g, ConvAlgo::WinogradF4), Some(TileKind::F4));
        assert_eq!(choose(&g, ConvAlgo::Winograd), Some(TileKind::F2));
        let big = geom(2, 8, 8, 64, Conv2dOptions::sp(1, 1));
        assert_eq!(choose(&big, ConvAlgo::Winograd), Some(TileKind::F4));
        for opts in [
            Conv2dOptions::sp(2, 1),
            Conv2dOptions::sp(1, 2).with_dilation(2),
            Conv2dOptions::sp(1, 1).with_groups(2),
        ] {
            let g = Geom::new(&[2, 256, 64, 64], &[256, 256 / opts.groups, 3, 3], opts);
            for algo in ConvAlgo::ALL {
                assert_eq!(choose(&g, algo), None, "{opts:?} {algo:?}");
            }
        }
    }
}
