//! `cargo bench --bench conv`: conv2d forward and forward+backward on the ResNet-18
//! layers at 512 px, batch 2, and the RetinaNet head conv (the same figures as
//! `focal bench conv`). Pass `--json` after `--` for one JSON object per line.

use focal_engine::bench::{self, conv, gemm, Budget};

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    if !json {
        println!("# {}", bench::threading_note());
    }
    let peak = gemm::measured_peak();
    let cases = conv::conv_preset("512").expect("the 512 preset");
    for row in conv::conv_rows(&cases, Budget::default(), peak) {
        println!("{}", if json { row.json() } else { row.text() });
    }
}
