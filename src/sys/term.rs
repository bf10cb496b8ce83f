//! The terminal's echo, off while a password is typed.

use std::os::fd::AsFd;

use nix::sys::termios::{self, LocalFlags, SetArg, Termios};

/// Echo off until dropped (then as it was).
pub struct EchoOff<'a, F: AsFd> {
    fd: &'a F,
    before: Termios,
}

impl<'a, F: AsFd> EchoOff<'a, F> {
    pub fn new(fd: &'a F) -> std::io::Result<Self> {
        let before = termios::tcgetattr(fd)?;
        let mut quiet = before.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        termios::tcsetattr(fd, SetArg::TCSANOW, &quiet)?;
        Ok(Self { fd, before })
    }
}

impl<F: AsFd> Drop for EchoOff<'_, F> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.before);
    }
}
