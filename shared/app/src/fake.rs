//! A fake CRM account for the unit tests of the pull and push loops: each call answers from its own
//! script (then from a default), and every call is recorded.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmsync_crm::{
    Crm, CrmClient, CrmError, CrmKind, Page, PageRequest, PushAction, PushResult, Subscription,
};
use crmsync_domain::{Lead, PhoneNumber, Provider, Region};
use serde_json::{Value, json};

type Script<T> = Mutex<VecDeque<Result<T, CrmError>>>;

/// A call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    List { page_token: Option<String> },
    Find,
    Create,
    Update { external_id: String },
    Read { external_id: String },
}

/// A CRM account with Follow Up Boss's record shapes and whatever answers the test scripts.
#[derive(Default)]
pub struct FakeCrm {
    pages: Script<Page>,
    finds: Script<Option<(String, Value)>>,
    writes: Script<PushResult>,
    reads: Script<Value>,
    calls: Mutex<Vec<Call>>,
}

impl FakeCrm {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeCrm::default())
    }

    pub fn client(self: &Arc<Self>) -> CrmClient {
        CrmClient::from_crm(self.clone())
    }

    pub fn page(&self, page: Result<Page, CrmError>) -> &Self {
        self.pages.lock().unwrap().push_back(page);
        self
    }

    pub fn find(&self, found: Result<Option<(String, Value)>, CrmError>) -> &Self {
        self.finds.lock().unwrap().push_back(found);
        self
    }

    pub fn write(&self, result: Result<PushResult, CrmError>) -> &Self {
        self.writes.lock().unwrap().push_back(result);
        self
    }

    pub fn read(&self, record: Result<Value, CrmError>) -> &Self {
        self.reads.lock().unwrap().push_back(record);
        self
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

/// A Follow Up Boss person.
pub fn person(id: u64, updated: &str, phone: Option<&str>) -> Value {
    let phones: Vec<Value> = phone.map(|p| json!({"value": p})).into_iter().collect();
    json!({"id": id, "name": format!("Person {id}"), "updated": updated, "phones": phones})
}

/// A page of these records (mapped as Follow Up Boss people of a US account), with a next token when
/// `next` is given.
pub fn page(records: Vec<Value>, next: Option<&str>) -> Page {
    Page {
        records: records
            .iter()
            .map(|r| crmsync_crm::map_record(Provider::FollowUpBoss, r, crmsync_domain::Region::US))
            .collect(),
        next_token: next.map(str::to_owned),
        has_more: next.is_some(),
    }
}

#[async_trait::async_trait]
impl Crm for FakeCrm {
    fn kind(&self) -> &'static dyn CrmKind {
        crmsync_crm::kind(Provider::FollowUpBoss)
    }

    fn advertised_rate(&self) -> Option<(u32, Duration)> {
        None
    }

    async fn list_page(&self, request: PageRequest<'_>) -> Result<Page, CrmError> {
        self.record(Call::List {
            page_token: request.page_token.map(str::to_owned),
        });
        let next = self.pages.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(page(vec![], None)))
    }

    async fn verify_credentials(&self) -> Result<(), CrmError> {
        Ok(())
    }

    async fn account(&self) -> Result<crmsync_crm::Account, CrmError> {
        Ok(Default::default())
    }

    /// One search, whatever the number.
    fn phone_searches(&self, phone: &PhoneNumber, _region: Region) -> Vec<Vec<String>> {
        vec![vec![phone.as_str().to_owned()]]
    }

    async fn find_by_phone_among(
        &self,
        _phone: &PhoneNumber,
        _region: Region,
        _forms: &[String],
    ) -> Result<Option<(String, Value)>, CrmError> {
        self.record(Call::Find);
        let next = self.finds.lock().unwrap().pop_front();
        next.unwrap_or(Ok(None))
    }

    async fn create(&self, _lead: &Lead) -> Result<PushResult, CrmError> {
        self.record(Call::Create);
        let next = self.writes.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            Ok(PushResult {
                external_id: Some("new".into()),
                action: PushAction::Created,
            })
        })
    }

    async fn update(
        &self,
        external_id: &str,
        _existing: &Value,
        _lead: &Lead,
    ) -> Result<PushResult, CrmError> {
        self.record(Call::Update {
            external_id: external_id.to_owned(),
        });
        let next = self.writes.lock().unwrap().pop_front();
        next.unwrap_or_else(|| {
            Ok(PushResult {
                external_id: Some(external_id.to_owned()),
                action: PushAction::Updated,
            })
        })
    }

    async fn read(&self, external_id: &str) -> Result<Value, CrmError> {
        self.record(Call::Read {
            external_id: external_id.to_owned(),
        });
        let next = self.reads.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(json!({"id": external_id})))
    }

    /// The fake account allows no webhooks: it is polled.
    async fn subscribe(&self, _callback: &str) -> Result<Option<Subscription>, CrmError> {
        Ok(None)
    }

    async fn unsubscribe(&self, _subscription: &Subscription) -> Result<(), CrmError> {
        Ok(())
    }
}
