fn main() {
    std::process::exit(pipe::edge::run::main_entry());
}
