//! Methods: `&self`, `&mut self`, `self`, async, and an associated function
//! returning `Self`. The receiver is never part of the key.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};

use cached_redis::cached;
use serde::{Deserialize, Serialize};

static CALLS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Account {
    id: u32,
    balance: i64,
}

struct Bank {
    name: String,
    lookups: u32,
}

impl Bank {
    #[cached(prefix = "ui_pass_bank_account")]
    fn account(&self, id: u32) -> Option<Account> {
        CALLS.fetch_add(1, SeqCst);
        (!self.name.is_empty()).then_some(Account { id, balance: 10 })
    }

    #[cached(prefix = "ui_pass_bank_audit")]
    fn audit(&mut self, id: u32) -> u32 {
        self.lookups += 1;
        id + self.lookups
    }

    #[cached(prefix = "ui_pass_bank_async")]
    async fn balance(&self, id: u32) -> Result<i64, String> {
        CALLS.fetch_add(1, SeqCst);
        tokio::task::yield_now().await;
        if id == 0 {
            return Err(format!("{}: no account 0", self.name));
        }
        Ok(i64::from(id) * 100)
    }

    #[cached]
    fn into_name(self, suffix: String) -> String {
        self.name + &suffix
    }
}

impl Account {
    #[cached]
    fn open(id: u32) -> Self {
        Account { id, balance: 0 }
    }
}

fn main() {
    let mut bank = Bank {
        name: "b".to_owned(),
        lookups: 0,
    };
    Bank::account_invalidate(1).unwrap();
    Bank::audit_invalidate(5).unwrap();

    let before = CALLS.load(SeqCst);
    assert_eq!(bank.account(1).unwrap().id, 1);
    assert_eq!(bank.account(1).unwrap().id, 1);
    assert_eq!(CALLS.load(SeqCst) - before, 1);
    let other = Bank {
        name: "other".to_owned(),
        lookups: 0,
    };
    // `self` is not in the key: another receiver gets the same entry.
    assert_eq!(other.account(1).unwrap().balance, 10);
    assert_eq!(CALLS.load(SeqCst) - before, 1);
    assert!(Bank::account_cache_key(1)
        .unwrap()
        .contains(":ui_pass_bank_account:"));
    assert!(other.account_refresh(1).is_some());
    assert_eq!(CALLS.load(SeqCst) - before, 2);

    assert_eq!(bank.audit(5), 6);
    assert_eq!(bank.audit(5), 6, "a hit does not run the body");
    assert_eq!(bank.lookups, 1);
    assert_eq!(bank.audit_refresh(5), 7);
    assert_eq!(bank.lookups, 2);

    assert_eq!(Account::open(3).id, 3);
    assert_eq!(Account::open_refresh(3).id, 3);
    assert!(Account::open_cache_key(3).is_ok());

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        Bank::balance_invalidate(2).await.unwrap();
        let before = CALLS.load(SeqCst);
        assert_eq!(bank.balance(2).await, Ok(200));
        assert_eq!(bank.balance(2).await, Ok(200));
        assert_eq!(CALLS.load(SeqCst) - before, 1);
        assert!(bank.balance(0).await.is_err());
        assert_eq!(bank.balance_refresh(2).await, Ok(200));
        assert!(Bank::balance_invalidate(2).await.unwrap());
    });

    assert_eq!(bank.into_name("!".to_owned()), "b!");
}
