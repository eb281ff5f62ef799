//! `cargo bench --bench gemm`: square GEMMs at 256..2048 on every path the CPU has, as
//! fractions of the measured FMA peak (the same figures as `focal bench gemm`). Pass
//! `--json` after `--` for one JSON object per line.

use focal_engine::bench::{self, gemm, Budget};

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    if !json {
        println!("# {}", bench::threading_note());
    }
    let peak = gemm::measured_peak();
    for row in gemm::gemm_rows(&[256, 512, 1024, 2048], Budget::default(), peak) {
        println!("{}", if json { row.json() } else { row.text() });
    }
}
