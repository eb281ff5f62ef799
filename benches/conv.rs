//! `cargo bench --bench conv`: conv2d forward and forward+backward on the ResNet-18
//! layers at 512 px, batch 2, and the RetinaNet head conv (same figures as
//! `focal bench conv`). Pass `--json` after `--` for one JSON object per line.

#[allow(dead_code)]
#[path = "../src/cmd/bench/kernels.rs"]
mod kernels;

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    if !json {
        println!("# {}", kernels::threading_note());
    }
    for row in kernels::conv_rows(&kernels::conv_cases(), kernels::Budget::default()) {
        println!("{}", if json { row.json() } else { row.text() });
    }
}
