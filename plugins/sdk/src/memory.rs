//! An in-memory [`Host`] for unit tests and native benchmarks of a step's logic.

use crate::host::Host;
use crate::http::{Request, Response};
use crate::types::{Level, Origin};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// State, archive and log kept in memory.
pub struct MemoryHost {
    /// The step's state.
    pub state: BTreeMap<String, Vec<u8>>,
    /// Archived objects by name: body and content type.
    pub archive: BTreeMap<String, (Vec<u8>, String)>,
    /// Log lines in order.
    pub logs: RefCell<Vec<(Level, String)>>,
    /// What [`Host::origin`] answers.
    pub origin: Origin,
    /// When set, `archive_put` fails with this reason.
    pub archive_error: Option<String>,
    /// What [`Host::setting`] answers.
    pub settings: BTreeMap<String, String>,
    /// Answers [`Host::http`] by request: a function of the request, or none (refused).
    #[allow(clippy::type_complexity)]
    pub http: Option<Box<dyn FnMut(&Request) -> Result<Response, String>>>,
    /// Requests sent, in order.
    pub requests: Vec<Request>,
}

impl std::fmt::Debug for MemoryHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryHost")
            .field("state", &self.state)
            .field("archive", &self.archive)
            .field("logs", &self.logs)
            .field("requests", &self.requests)
            .finish_non_exhaustive()
    }
}

impl Default for MemoryHost {
    fn default() -> Self {
        MemoryHost {
            state: BTreeMap::new(),
            archive: BTreeMap::new(),
            logs: RefCell::new(Vec::new()),
            origin: Origin { step: "host".to_owned(), step_version: "test".to_owned() },
            archive_error: None,
            settings: BTreeMap::new(),
            http: None,
            requests: Vec::new(),
        }
    }
}

impl Host for MemoryHost {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.state.get(key).cloned()
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.state.insert(key.to_owned(), value.to_vec());
    }

    fn delete(&mut self, key: &str) {
        self.state.remove(key);
    }

    fn log(&self, level: Level, message: &str) {
        self.logs.borrow_mut().push((level, message.to_owned()));
    }

    fn archive_put(&mut self, name: &str, body: &[u8], content_type: &str) -> Result<(), String> {
        if let Some(reason) = &self.archive_error {
            return Err(reason.clone());
        }
        // Create-only, like the real archive: an existing name is left as it is.
        self.archive.entry(name.to_owned()).or_insert_with(|| (body.to_vec(), content_type.to_owned()));
        Ok(())
    }

    fn origin(&self) -> Origin {
        self.origin.clone()
    }

    fn http(&mut self, request: &Request) -> Result<Response, String> {
        self.requests.push(request.clone());
        match &mut self.http {
            Some(answer) => answer(request),
            None => Err(format!("{} {}: this host makes no outbound calls", request.method, request.url)),
        }
    }

    fn setting(&self, name: &str) -> Option<String> {
        self.settings.get(name).cloned()
    }
}
