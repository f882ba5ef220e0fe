fn main() {
    std::process::exit(pipe::main_entry());
}
