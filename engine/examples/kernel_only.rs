fn main() {
    for _ in 0..3 {
        for (n, g) in focal_engine::gemm::kernel_only(100000) {
            print!("{n}: {g:.1}  ");
        }
        println!();
    }
}
