//! `Shared<T>`: how a script value (a network) is shared between the prompt and background runs. Like a `RefCell`
//! (any number of readers on one thread, or one writer; a conflict is an error, never a wait), but thread-safe, and a
//! background run can *hold* the value: it takes it exclusively for the whole run from its own thread, and every
//! other borrow fails with a message naming the run until the hold is dropped.
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::ThreadId;

/// A borrow that was refused, with what to do about it.
#[derive(Debug, Clone)]
pub struct BorrowError {
    msg: String,
    held: bool,
}

impl BorrowError {
    /// Whether a background run holds the value (the message names it).
    pub fn held(&self) -> bool {
        self.held
    }
}

impl std::fmt::Display for BorrowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for BorrowError {}

#[derive(Default)]
struct State {
    readers: usize,
    /// The thread the readers are on (readers never span threads: `T` need not be `Sync`).
    reader_thread: Option<ThreadId>,
    writer: bool,
    /// Why the value is held (the error every borrow gets meanwhile).
    held: Option<String>,
}

pub struct Shared<T> {
    value: UnsafeCell<T>,
    state: Mutex<State>,
}

// SAFETY: the value is reached only through `Ref` (shared, all on one thread at a time, and `Ref` is not `Send`),
// `RefMut` (exclusive) or `Hold` (exclusive, may move to another thread, which needs `T: Send`), as `state` grants.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn new(value: T) -> Shared<T> {
        Shared { value: UnsafeCell::new(value), state: Mutex::new(State::default()) }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refuse(st: &State, busy: &str) -> BorrowError {
        match &st.held {
            Some(why) => BorrowError { msg: why.clone(), held: true },
            None => BorrowError { msg: busy.to_string(), held: false },
        }
    }

    /// Shared access; fails while a writer or a background run has it, or readers on another thread do.
    pub fn try_borrow(&self) -> Result<Ref<'_, T>, BorrowError> {
        let mut st = self.state();
        let me = std::thread::current().id();
        if st.held.is_some() || st.writer || (st.readers > 0 && st.reader_thread != Some(me)) {
            return Err(Self::refuse(&st, "the network is in use by another operation"));
        }
        st.readers += 1;
        st.reader_thread = Some(me);
        Ok(Ref { cell: self, _not_send: PhantomData })
    }

    /// Exclusive access; fails while anyone else has it.
    pub fn try_borrow_mut(&self) -> Result<RefMut<'_, T>, BorrowError> {
        let mut st = self.state();
        if st.held.is_some() || st.writer || st.readers > 0 {
            return Err(Self::refuse(&st, "the network is in use by another operation"));
        }
        st.writer = true;
        Ok(RefMut { cell: self, _not_send: PhantomData })
    }

    /// Why the value is held now, if it is.
    pub fn held_by(&self) -> Option<String> {
        self.state().held.clone()
    }
}

impl<T: Send> Shared<T> {
    /// Takes the value exclusively for a background run until the `Hold` is dropped; meanwhile every borrow fails with
    /// `why`. Fails when the value is borrowed or held already.
    pub fn hold(self: &Arc<Self>, why: String) -> Result<Hold<T>, BorrowError> {
        let mut st = self.state();
        if st.held.is_some() || st.writer || st.readers > 0 {
            return Err(Self::refuse(&st, "the network is in use by another operation"));
        }
        st.writer = true;
        st.held = Some(why);
        drop(st);
        Ok(Hold { cell: Arc::clone(self), _not_sync: PhantomData })
    }
}

pub struct Ref<'a, T> {
    cell: &'a Shared<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for Ref<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a reader is registered; writers and holds are excluded until it is dropped.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> Drop for Ref<'_, T> {
    fn drop(&mut self) {
        let mut st = self.cell.state();
        st.readers -= 1;
        if st.readers == 0 {
            st.reader_thread = None;
        }
    }
}

pub struct RefMut<'a, T> {
    cell: &'a Shared<T>,
    _not_send: PhantomData<*const ()>,
}

impl<T> Deref for RefMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: this is the only borrow.
        unsafe { &*self.cell.value.get() }
    }
}

impl<T> DerefMut for RefMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: this is the only borrow.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for RefMut<'_, T> {
    fn drop(&mut self) {
        self.cell.state().writer = false;
    }
}

/// A background run's exclusive claim; releases the value when dropped (also when the run's thread unwinds). It may
/// move to another thread but not be shared between threads (`T` need not be `Sync`).
pub struct Hold<T> {
    cell: Arc<Shared<T>>,
    _not_sync: PhantomData<std::cell::Cell<()>>,
}

impl<T> Hold<T> {
    pub fn get(&self) -> &T {
        // SAFETY: the hold is exclusive.
        unsafe { &*self.cell.value.get() }
    }

    pub fn get_mut(&mut self) -> &mut T {
        // SAFETY: the hold is exclusive and borrowed mutably.
        unsafe { &mut *self.cell.value.get() }
    }
}

impl<T> Drop for Hold<T> {
    fn drop(&mut self) {
        let mut st = self.cell.state();
        st.writer = false;
        st.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_one_thread_writers_and_holds_exclude() {
        let c = Arc::new(Shared::new(5));
        let a = c.try_borrow().unwrap();
        let b = c.try_borrow().unwrap();
        assert_eq!(*a + *b, 10);
        assert!(c.try_borrow_mut().is_err());
        let c2 = Arc::clone(&c);
        assert!(std::thread::spawn(move || c2.try_borrow().is_err()).join().unwrap());
        drop((a, b));
        let mut w = c.try_borrow_mut().unwrap();
        *w = 7;
        assert!(c.try_borrow().is_err());
        drop(w);
        let mut h = c.hold("network A is being trained by background run satm-1".into()).unwrap();
        let e = c.try_borrow().err().unwrap();
        assert!(e.held() && e.to_string().contains("satm-1"), "{e}");
        assert!(c.try_borrow_mut().is_err() && c.hold("again".into()).is_err());
        let v = std::thread::spawn(move || {
            *h.get_mut() += 1;
            *h.get()
        })
        .join()
        .unwrap();
        assert_eq!(v, 8);
        assert_eq!(*c.try_borrow().unwrap(), 8);
        assert!(c.held_by().is_none());
    }
}
