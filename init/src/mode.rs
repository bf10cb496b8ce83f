//! How `faas-init` was asked to run the program (`main` parses it).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stdio,
    Listen,
    Port(u16),
    Bind(u16),
    /// A program of faasd's protocol (`--fork` only).
    Control,
}
