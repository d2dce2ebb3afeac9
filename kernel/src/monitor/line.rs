//! The monitor's line editor: turns input bytes into edits of the line being typed. Pure
//! logic (the monitor applies the edits to the console), host-tested.
//!
//! Keys: printable ASCII inserts at the end; Backspace (0x7f or 0x08) erases the last
//! character; Ctrl-U erases the line; Ctrl-C cancels it; Return (`\r`, `\n`, or `\r\n` as one)
//! submits it; Up and Down (`ESC [ A`, `ESC [ B`, or `ESC O A/B`) walk the history of
//! submitted lines, Down past the newest giving back what was being typed. Other bytes and
//! escape sequences are ignored.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Submitted lines kept for Up/Down.
pub const HISTORY: usize = 32;

/// What a byte did to the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing visible.
    None,
    /// The byte was appended (echo it).
    Insert(u8),
    /// The last character was erased.
    Erase,
    /// The whole line is now this (redraw it).
    Replace(Vec<u8>),
    /// The line is done.
    Submit(String),
    /// The line was cancelled (Ctrl-C).
    Cancel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Escape {
    None,
    Esc,
    Csi,
}

/// The line being typed and the history.
pub struct LineEditor {
    line: Vec<u8>,
    max: usize,
    history: VecDeque<String>,
    /// Position in the history while walking it (0 = oldest).
    walking: Option<usize>,
    /// What was typed before the walk began.
    draft: Vec<u8>,
    escape: Escape,
    after_cr: bool,
}

impl LineEditor {
    /// An empty editor for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            max,
            history: VecDeque::new(),
            walking: None,
            draft: Vec::new(),
            escape: Escape::None,
            after_cr: false,
        }
    }

    /// The line as typed so far.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// Feeds one input byte.
    pub fn feed(&mut self, b: u8) -> Edit {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        match self.escape {
            Escape::Esc => {
                self.escape = if b == b'[' || b == b'O' {
                    Escape::Csi
                } else {
                    Escape::None
                };
                return Edit::None;
            }
            Escape::Csi => {
                // Parameters and intermediates (0x20-0x3f) continue the sequence; a final
                // byte (0x40-0x7e) ends it.
                if (0x20..0x40).contains(&b) {
                    return Edit::None;
                }
                self.escape = Escape::None;
                return match b {
                    b'A' => self.older(),
                    b'B' => self.newer(),
                    _ => Edit::None,
                };
            }
            Escape::None => {}
        }
        match b {
            0x1b => {
                self.escape = Escape::Esc;
                Edit::None
            }
            b'\n' if after_cr => Edit::None,
            b'\r' | b'\n' => {
                self.after_cr = b == b'\r';
                let text = String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                self.walking = None;
                let trimmed = text.trim();
                if !trimmed.is_empty() && self.history.back().map(String::as_str) != Some(trimmed) {
                    if self.history.len() == HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(trimmed.into());
                }
                Edit::Submit(text)
            }
            0x03 => {
                self.line.clear();
                self.walking = None;
                Edit::Cancel
            }
            0x15 => {
                self.line.clear();
                Edit::Replace(Vec::new())
            }
            0x7f | 0x08 => match self.line.pop() {
                Some(_) => Edit::Erase,
                None => Edit::None,
            },
            0x20..=0x7e if self.line.len() < self.max => {
                self.line.push(b);
                Edit::Insert(b)
            }
            _ => Edit::None,
        }
    }

    fn older(&mut self) -> Edit {
        let pos = match self.walking {
            None if self.history.is_empty() => return Edit::None,
            None => {
                self.draft = self.line.clone();
                self.history.len() - 1
            }
            Some(0) => return Edit::None,
            Some(i) => i - 1,
        };
        self.walking = Some(pos);
        self.show(self.history[pos].as_bytes().to_vec())
    }

    fn newer(&mut self) -> Edit {
        match self.walking {
            None => Edit::None,
            Some(i) if i + 1 < self.history.len() => {
                self.walking = Some(i + 1);
                self.show(self.history[i + 1].as_bytes().to_vec())
            }
            Some(_) => {
                self.walking = None;
                let draft = core::mem::take(&mut self.draft);
                self.show(draft)
            }
        }
    }

    fn show(&mut self, mut text: Vec<u8>) -> Edit {
        text.truncate(self.max);
        self.line = text.clone();
        Edit::Replace(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(ed: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        bytes.iter().map(|&b| ed.feed(b)).collect()
    }

    fn submit(ed: &mut LineEditor, text: &str) {
        feed_all(ed, text.as_bytes());
        assert_eq!(ed.feed(b'\r'), Edit::Submit(text.into()));
    }

    #[test]
    fn typing_backspace_and_return() {
        let mut ed = LineEditor::new(80);
        assert_eq!(
            feed_all(&mut ed, b"cpx"),
            [Edit::Insert(b'c'), Edit::Insert(b'p'), Edit::Insert(b'x')]
        );
        assert_eq!(ed.feed(0x7f), Edit::Erase);
        feed_all(&mut ed, b"us");
        assert_eq!(ed.feed(b'\r'), Edit::Submit("cpus".into()));
        assert_eq!(ed.feed(b'\n'), Edit::None, "\\r\\n is one Return");
        assert_eq!(ed.feed(b'\n'), Edit::Submit(String::new()));
        assert_eq!(ed.feed(0x08), Edit::None, "nothing to erase");
    }

    #[test]
    fn ctrl_u_clears_and_ctrl_c_cancels() {
        let mut ed = LineEditor::new(80);
        feed_all(&mut ed, b"stress mutex");
        assert_eq!(ed.feed(0x15), Edit::Replace(Vec::new()));
        assert!(ed.line().is_empty());
        feed_all(&mut ed, b"ps");
        assert_eq!(ed.feed(0x03), Edit::Cancel);
        assert!(ed.line().is_empty());
    }

    #[test]
    fn the_line_stops_at_its_limit() {
        let mut ed = LineEditor::new(3);
        assert_eq!(feed_all(&mut ed, b"abcd")[3], Edit::None);
        assert_eq!(ed.line(), b"abc");
    }

    #[test]
    fn up_and_down_walk_the_history_and_give_the_draft_back() {
        let mut ed = LineEditor::new(80);
        submit(&mut ed, "cpus");
        submit(&mut ed, "ps");
        submit(&mut ed, "ps"); // a repeat is kept once
        feed_all(&mut ed, b"in");
        assert_eq!(
            feed_all(&mut ed, b"\x1b[A")[2],
            Edit::Replace(b"ps".to_vec())
        );
        assert_eq!(
            feed_all(&mut ed, b"\x1b[A")[2],
            Edit::Replace(b"cpus".to_vec())
        );
        assert_eq!(feed_all(&mut ed, b"\x1b[A")[2], Edit::None, "oldest");
        assert_eq!(
            feed_all(&mut ed, b"\x1bOB")[2],
            Edit::Replace(b"ps".to_vec())
        );
        assert_eq!(
            feed_all(&mut ed, b"\x1b[B")[2],
            Edit::Replace(b"in".to_vec())
        );
        assert_eq!(feed_all(&mut ed, b"\x1b[B")[2], Edit::None);
        assert_eq!(ed.line(), b"in");
        // Other sequences (here Delete, ESC [ 3 ~) are swallowed whole.
        assert!(
            feed_all(&mut ed, b"\x1b[3~")
                .iter()
                .all(|e| *e == Edit::None)
        );
        assert_eq!(ed.feed(b'\r'), Edit::Submit("in".into()));
    }

    #[test]
    fn history_keeps_the_newest() {
        let mut ed = LineEditor::new(80);
        for i in 0..HISTORY + 5 {
            submit(&mut ed, &alloc::format!("c{i}"));
        }
        let mut oldest = Vec::new();
        for _ in 0..HISTORY + 2 {
            if let Edit::Replace(t) = feed_all(&mut ed, b"\x1b[A")[2].clone() {
                oldest = t;
            }
        }
        assert_eq!(oldest, b"c5");
    }
}
