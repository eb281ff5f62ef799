use focal_engine::gemm::*;
use std::sync::atomic::Ordering::Relaxed;
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
    let n: usize = args[1].parse().unwrap();
    let shapes: Vec<String> = args[2].split(',').map(String::from).collect();
    // configs: kc:mc:order
    let cfgs: Vec<(usize, usize, usize)> = args[3]
        .split(',')
        .map(|c| {
            let v: Vec<usize> = c.split(':').map(|x| x.parse().unwrap()).collect();
            (v[0], v[1], v[2])
        })
        .collect();
    let rounds: usize = args.get(4).map(|s| s.parse().unwrap()).unwrap_or(10);
    let mut r = focal_engine::Rng::new(1);
    let a = r.normal_vec(n * n, 0.0, 1.0);
    let b = r.normal_vec(n * n, 0.0, 1.0);
    let mut c = vec![0.0f32; n * n];
    let flops = 2.0 * (n as f64).powi(3);
    let vars: Vec<_> = shape_variants()
        .into_iter()
        .filter(|(nm, _)| shapes.iter().any(|s| nm.contains(s.as_str())))
        .collect();
    let mut best = vec![vec![f64::MAX; cfgs.len()]; vars.len()];
    for _ in 0..rounds {
        for (vi, (_, f)) in vars.iter().enumerate() {
            for (ci, &(kc, mc, order)) in cfgs.iter().enumerate() {
                driver::TUNE[0].store(kc, Relaxed);
                driver::TUNE[1].store(mc, Relaxed);
                driver::TUNE[3].store(order, Relaxed);
                let t = cpu();
                f(
                    MatRef::row_major(&a, n, n),
                    MatRef::row_major(&b, n, n),
                    MatMut::row_major(&mut c, n, n),
                );
                best[vi][ci] = best[vi][ci].min(cpu() - t);
            }
        }
    }
    for (vi, (nm, _)) in vars.iter().enumerate() {
        for (ci, cfg) in cfgs.iter().enumerate() {
            println!(
                "{nm} kc={} mc={} order={}: {:.1} GFLOP/s",
                cfg.0,
                cfg.1,
                cfg.2,
                flops / best[vi][ci] / 1e9
            );
        }
    }
}
