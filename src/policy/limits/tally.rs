//! Counting in this instance's cells, on an explicit clock: the local half of the
//! executor, and the whole of it without a cluster.
//!
//! A [`Tally`] counts operations one by one, remembers each acquisition so that a
//! refusal can give them all back (a refused request counts against nothing and
//! never burns quota), and keeps the tightest usage for the headers: the policy
//! with the fewest requests remaining (ties: the one resetting last).

use super::plan::{CellRef, Counter, CounterPlan, Op, MAX_OPS};
use super::report::{LimitReport, PolicyRef};
use crate::store::cells::{GcraCell, GcraRate, QuotaCell, Timestamp, WindowCell};
use crate::store::Usage;

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
    /// At most one per operation, so [`MAX_OPS`] always suffices.
    held: [Option<Held<'a>>; MAX_OPS],
    n: usize,
    best: Option<(PolicyRef<'a>, Usage)>,
    refused: Option<(PolicyRef<'a>, Usage)>,
}

fn tighter(a: &Usage, b: &Usage) -> bool {
    let reset = |u: &Usage| u.reset.unwrap_or(u64::MAX);
    a.remaining < b.remaining || (a.remaining == b.remaining && reset(a) > reset(b))
}

/// Counts every operation of `plan` here, in order; on a refusal, gives back
/// what was taken.
pub(crate) fn count_local<'a>(plan: &CounterPlan<'a, '_>, now: Timestamp) -> LimitReport<'a> {
    let mut tally = Tally::new();
    if plan.ops().try_for_each(|op| tally.count(op, now)).is_err() {
        tally.rollback();
    }
    tally.report(plan.usage_plan())
}

impl<'a> Tally<'a> {
    pub(crate) fn new() -> Tally<'a> {
        Tally {
            held: [const { None }; MAX_OPS],
            n: 0,
            best: None,
            refused: None,
        }
    }

    /// Counts `op` in this instance's cells. A key its table cannot track (full
    /// of live entries) is not counted.
    pub(crate) fn count(&mut self, op: &Op<'a, '_>, now: Timestamp) -> Result<(), Refused> {
        let acquired = match &op.counter {
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
                self.admit(op.policy, u);
                Ok(())
            }
            Err(u) => self.refuse(op.policy, u),
        }
    }

    /// Remembers an acquisition for [`Tally::rollback`]; passes its usage on.
    fn hold(&mut self, u: Usage, h: Held<'a>) -> Usage {
        // Always within bounds: one entry per operation of a plan of at most MAX_OPS.
        if let Some(slot) = self.held.get_mut(self.n) {
            *slot = Some(h);
            self.n += 1;
        }
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
        for h in self.held[..self.n].iter_mut().filter_map(Option::take) {
            match h {
                Held::Rate(c, rate) => c.undo(&rate),
                Held::Window(c, idx) => c.undo(idx),
                Held::Quota(c) => c.undo(),
            }
        }
        self.n = 0;
    }

    pub(crate) fn report(&self, plan: Option<&'a str>) -> LimitReport<'a> {
        LimitReport {
            plan,
            tightest: self.refused.or(self.best),
            refused: self.refused.is_some(),
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
