//! Views a node keeps decided and encoded, so a repeated question costs one lookup (see [`ViewMemo`]).

use std::collections::HashMap;

use halcyon_policy::{Principal, Purpose};
use halcyon_projector::disclose::{Asker, Disclosure, view_of};
use halcyon_projector::read::ChildFacts;
use halcyon_schema::ChildId;

/// Most views a node keeps decided (about 4 KB each in the bench's scenario).
pub const VIEW_MEMO_MAX: usize = 4096;

/// A decided view, encoded (see [`crate::reply`]), and what it disclosed.
pub type DecidedView = std::sync::Arc<(bytes::Bytes, Disclosure)>;

/// Views already decided, each kept encoded with the facts it was decided on.
///
/// Without break-glass, a decision depends only on the policy (fixed for the node's life), the principal,
/// the purpose and the child's facts with the sharing state derived from them: the same inputs give the
/// same view. A view is reused only while the node's fact cache still holds the very [`ChildFacts`] it was
/// decided on; any newly projected event gives the child new facts and the view is decided again. A call
/// with break-glass is always decided afresh, because its decisions depend on the time.
#[derive(Debug, Default)]
pub struct ViewMemo {
    entries: std::sync::Mutex<HashMap<(ChildId, Principal, Purpose), Decided>>,
}

#[derive(Debug)]
struct Decided {
    /// Weak, so a memo never keeps facts alive; the allocation outlives it, so its address is not reused.
    facts: std::sync::Weak<ChildFacts>,
    view: DecidedView,
}

impl ViewMemo {
    /// The whole view of `child` for the asker without break-glass (whatever it claims), as [`view_of`]
    /// decides it.
    pub fn view(&self, asker: &Asker<'_>, child: ChildId, facts: &std::sync::Arc<ChildFacts>) -> DecidedView {
        let key = (child, asker.principal.clone(), asker.purpose);
        let current = std::sync::Arc::downgrade(facts);
        if let Some(decided) = self.lock().get(&key)
            && decided.facts.ptr_eq(&current)
        {
            return decided.view.clone();
        }
        let (view, disclosure) = view_of(
            &Asker {
                break_glass: None,
                ..*asker
            },
            child,
            facts,
            0..facts.facts.len(),
        );
        let view = std::sync::Arc::new((crate::reply::ViewReply::encode_view(&view), disclosure));
        let mut entries = self.lock();
        if entries.len() >= VIEW_MEMO_MAX {
            entries.retain(|_, d| d.facts.strong_count() > 0);
            if entries.len() >= VIEW_MEMO_MAX {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Decided {
                facts: current,
                view: view.clone(),
            },
        );
        view
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(ChildId, Principal, Purpose), Decided>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
