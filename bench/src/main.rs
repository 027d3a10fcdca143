fn main() {
    println!("qkv-bench: isa {}", kernels::Isa::best());
}
