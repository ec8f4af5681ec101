//! Counting in this instance's cells, on an explicit clock: the local half of the
//! executor, and the whole of it without a cluster.
//!
//! A [`Tally`] counts operations one by one as a [`Plan`] (nothing after a
//! refusal), remembers each acquisition so that a refusal can give them all back
//! (a refused request counts against nothing and never burns quota), and keeps
//! the tightest usage for the headers: the policy with the fewest requests
//! remaining (ties: the one resetting last).

use super::plan::{CellRef, Counter, Plan, MAX_OPS};
use super::report::{LimitReport, PolicyRef};
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Timestamp, WindowCell};
use crate::store::Usage;
use smallvec::SmallVec;

/// A refusal already recorded in the [`Tally`].
#[derive(Debug)]
pub(crate) struct Refused;

/// An acquisition, with what it takes to give it back.
enum Held<'a> {
    Rate(CellRef<'a, GcraCell>, GcraRate),
    /// The window index the request was counted in.
    Window(CellRef<'a, WindowCell>, u32),
    Quota(CellRef<'a, QuotaCell>),
}

/// The acquisitions and usages of one check.
pub(crate) struct Tally<'a> {
    /// At most one per operation: on the stack for any route within the bound.
    held: SmallVec<[Held<'a>; MAX_OPS]>,
    best: Option<(PolicyRef<'a>, Usage)>,
    refused: Option<(PolicyRef<'a>, Usage)>,
    now: Timestamp,
}

fn tighter(a: &Usage, b: &Usage) -> bool {
    let reset = |u: &Usage| u.reset.unwrap_or(u64::MAX);
    a.remaining < b.remaining || (a.remaining == b.remaining && reset(a) > reset(b))
}

impl<'a> Tally<'a> {
    /// An empty tally counting at `now`.
    #[inline]
    pub(crate) fn new(now: Timestamp) -> Tally<'a> {
        Tally {
            held: SmallVec::new(),
            best: None,
            refused: None,
            now,
        }
    }

    /// Counts one operation in this instance's cells. A key its table cannot
    /// track (full of live entries) is not counted.
    pub(crate) fn count(
        &mut self,
        policy: PolicyRef<'a>,
        counter: &Counter<'a, '_>,
    ) -> Result<(), Refused> {
        let now = self.now;
        let acquired = match counter {
            Counter::Rate(slot) => {
                let Some(cell) = slot.cell(now) else {
                    return Ok(());
                };
                let rate = slot.geometry();
                cell.acquire(&rate, now)
                    .map(|u| self.hold(u, Held::Rate(cell, rate)))
            }
            Counter::Window(slot, limit) => {
                let Some(cell) = slot.cell(now) else {
                    return Ok(());
                };
                cell.acquire(slot.geometry(), *limit, now)
                    .map(|(u, idx)| self.hold(u, Held::Window(cell, idx)))
            }
            Counter::Quota(slot, limit) => {
                let Some(cell) = slot.cell(now) else {
                    return Ok(());
                };
                cell.acquire(*limit)
                    .map(|u| self.hold(u, Held::Quota(cell)))
            }
        };
        match acquired {
            Ok(u) => {
                self.admit(policy, u);
                Ok(())
            }
            Err(u) => self.refuse(policy, u),
        }
    }

    /// Remembers an acquisition for [`Tally::rollback`]; passes its usage on.
    fn hold(&mut self, u: Usage, h: Held<'a>) -> Usage {
        self.held.push(h);
        u
    }

    /// Records an admitted usage (counted here or by the shared store).
    pub(crate) fn admit(&mut self, p: PolicyRef<'a>, u: Usage) {
        if self.best.as_ref().is_none_or(|(_, b)| tighter(&u, b)) {
            self.best = Some((p, u));
        }
    }

    /// Records the refusing policy.
    pub(crate) fn refuse(&mut self, p: PolicyRef<'a>, u: Usage) -> Result<(), Refused> {
        self.refused = Some((p, u));
        Err(Refused)
    }

    /// Gives back every acquisition made so far.
    pub(crate) fn rollback(&mut self) {
        for h in self.held.drain(..) {
            match h {
                Held::Rate(c, rate) => c.undo(&rate),
                Held::Window(c, idx) => c.undo(idx),
                Held::Quota(c) => c.undo(),
            }
        }
    }

    /// The report of a completed check: a refused one gives everything back.
    pub(crate) fn finish(&mut self, usage_plan: Option<&'a str>) -> LimitReport<'a> {
        if self.refused.is_some() {
            self.rollback();
        }
        self.report(usage_plan)
    }

    pub(crate) fn report(&self, plan: Option<&'a str>) -> LimitReport<'a> {
        LimitReport {
            plan,
            tightest: self.refused.or(self.best),
            refused: self.refused.is_some(),
        }
    }
}

impl<'a, 'r> Plan<'a, 'r> for Tally<'a> {
    /// Counts at once; after a refusal, counts nothing more.
    fn push(&mut self, policy: PolicyRef<'a>, counter: Counter<'a, 'r>) {
        if self.refused.is_none() {
            let _ = self.count(policy, &counter);
        }
    }
}

/// Raises this instance's cell to a count the shared store reported, so that a
/// fall-back to local counting continues from it rather than from zero.
pub(crate) fn mirror(counter: &Counter<'_, '_>, at: Timestamp, count: u64) {
    match counter {
        Counter::Window(slot, _) => {
            if let Some(c) = slot.cell(at) {
                c.observe(slot.geometry(), at, count);
            }
        }
        Counter::Quota(slot, _) => {
            if let Some(c) = slot.cell(at) {
                c.observe(count);
            }
        }
        // GCRA state is not a count; nothing to mirror.
        Counter::Rate(_) => {}
    }
}
