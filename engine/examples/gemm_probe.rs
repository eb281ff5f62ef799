use focal_engine::gemm::*;
use std::time::Instant;
#[repr(C)]
struct Ts {
    s: i64,
    ns: i64,
}
extern "C" {
    fn clock_gettime(c: i32, t: *mut Ts) -> i32;
}
fn cpu() -> f64 {
    let mut t = Ts { s: 0, ns: 0 };
    unsafe { clock_gettime(2, &mut t) };
    t.s as f64 + t.ns as f64 * 1e-9
}
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let mut r = focal_engine::Rng::new(1);
    let a = r.normal_vec(n * n, 0.0, 1.0);
    let b = r.normal_vec(n * n, 0.0, 1.0);
    let mut c = vec![0.0f32; n * n];
    for isa in [Isa::Avx512, Isa::Avx2] {
        if std::env::var("NOPEAK").is_ok() {
            break;
        }
        let p = peak::measure(isa, 0.2, 3);
        println!(
            "peak {isa}: {:.1} GFLOP/s ({} threads)",
            p.gflops, p.threads
        );
    }
    let flops = 2.0 * (n as f64).powi(3);
    for (name, f) in shape_variants() {
        let mut best = f64::MAX;
        for _ in 0..12 {
            let t = cpu();
            f(
                MatRef::row_major(&a, n, n),
                MatRef::row_major(&b, n, n),
                MatMut::row_major(&mut c, n, n),
            );
            best = best.min(cpu() - t);
        }
        println!(
            "{name}: {:.3} ms {:.1} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    }
    for isa in [Isa::Portable] {
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            gemm_with(
                isa,
                1.0,
                MatRef::row_major(&a, n, n),
                MatRef::row_major(&b, n, n),
                0.0,
                MatMut::row_major(&mut c, n, n),
            );
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "{isa}: {:.3} ms {:.1} GFLOP/s",
            best * 1e3,
            flops / best / 1e9
        );
    }
}
