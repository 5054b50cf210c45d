//! One LVM report shared by everything on the node that reads LVM: the agent's pass, the
//! LogicalVolume reconciler and the CSI node service. A report costs one `lvm fullreport`
//! (0.1 s on hardware, about a second under emulation), so callers that arrive together share one
//! read, and our own changes are recorded in the cached copy instead of being read back.
//!
//! Changes to LVs go through [`Reports::changes`]: one at a time per node, which LVM's VG lock
//! would impose anyway, and which makes each capacity decision see every earlier change.

use std::sync::Arc;
use std::time::Instant;

use lvm::{Error, Lvm, Report};
use tokio::sync::{Mutex, MutexGuard};

pub struct Reports {
    lvm: Lvm,
    cached: Mutex<Cached>,
    changes: Mutex<()>,
}

#[derive(Default)]
struct Cached {
    report: Option<Arc<Report>>,
    taken: Option<Instant>,
    /// False once something changed LVM in a way not recorded in `report`.
    valid: bool,
}

impl Reports {
    pub fn new(lvm: Lvm) -> Self {
        Self {
            lvm,
            cached: Mutex::new(Cached::default()),
            changes: Mutex::new(()),
        }
    }

    pub fn lvm(&self) -> &Lvm {
        &self.lvm
    }

    /// Serialises LV changes on this node; hold it across decide → act → [`Reports::record`].
    pub async fn changes(&self) -> MutexGuard<'_, ()> {
        self.changes.lock().await
    }

    /// The cached report while it is valid, else a new one.
    pub async fn current(&self) -> Result<Arc<Report>, Error> {
        let asked = Instant::now();
        let mut c = self.cached.lock().await;
        if c.valid
            && let Some(r) = &c.report
        {
            return Ok(r.clone());
        }
        self.read(&mut c, asked).await
    }

    /// A report read after this call began: what the disks say now, for the agent's pass and
    /// anything that must see changes made outside this process. Callers waiting together share
    /// one read.
    pub async fn fresh(&self) -> Result<Arc<Report>, Error> {
        let asked = Instant::now();
        let mut c = self.cached.lock().await;
        self.read(&mut c, asked).await
    }

    async fn read(&self, c: &mut Cached, asked: Instant) -> Result<Arc<Report>, Error> {
        if c.valid
            && let (Some(r), Some(t)) = (&c.report, c.taken)
            && t >= asked
        {
            return Ok(r.clone());
        }
        let lvm = self.lvm.clone();
        let taken = Instant::now();
        let report = tokio::task::spawn_blocking(move || lvm.report())
            .await
            .map_err(|e| Error::Parse {
                what: "lvm fullreport".into(),
                message: format!("the report task failed: {e}"),
            })??;
        let report = Arc::new(report);
        *c = Cached {
            report: Some(report.clone()),
            taken: Some(taken),
            valid: true,
        };
        Ok(report)
    }

    /// Records a change we made (so the next [`Reports::current`] needs no read), or forgets
    /// the cached report when `edit` cannot say what LVM did (it returns false).
    pub async fn record(&self, edit: impl FnOnce(&mut Report) -> bool) {
        let mut c = self.cached.lock().await;
        let kept = match c.report.as_mut() {
            Some(r) => edit(Arc::make_mut(r)),
            None => false,
        };
        c.valid &= kept;
    }

    /// The next [`Reports::current`] reads LVM again.
    pub async fn invalidate(&self) {
        self.cached.lock().await.valid = false;
    }
}
