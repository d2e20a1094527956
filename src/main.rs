fn main() {
    std::process::exit(satm::cli::main());
}
