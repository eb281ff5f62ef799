//! `cargo bench --bench gemm`: square sgemm at 256..2048 (same figures as
//! `focal bench gemm`). Pass `--json` after `--` for one JSON object per line.

#[allow(dead_code)]
#[path = "../src/cmd/bench/kernels.rs"]
mod kernels;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    if !json {
        println!("# {}", kernels::threading_note());
    }
    for row in kernels::gemm_rows(&[256, 512, 1024, 2048], kernels::Budget::default()) {
        println!("{}", if json { row.json() } else { row.text() });
    }
}
