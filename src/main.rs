fn main() {
    std::process::exit(pipe::edge::usage::main_entry());
}
