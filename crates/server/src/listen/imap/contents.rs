//! What a folder holds, for every stage that reads one: the store's messages, or for the
//! Tracking folder the account's tracking records, each made into a message
//! (`rules::tracking_folder`, SPEC 8.3, 9).

use std::collections::HashMap;

use vouchmail_store::{FolderInfo, FolderMessage, StoreError, StoredTrackingRecord};

use super::context::{Connection, FolderStamp};
use crate::rules::folders;
use crate::rules::tracking_folder::{self, SHOWN_RECORDS};

impl Connection<'_> {
    /// The folder's state and messages, oldest first; None when it does not exist.
    pub async fn folder_contents(
        &mut self,
        name: &str,
    ) -> Result<Option<(FolderInfo, Vec<FolderMessage>)>, StoreError> {
        let Some((info, messages)) = self.store().folder_messages(self.user(), name).await? else {
            return Ok(None);
        };
        if !folders::is_tracking(&info.name) {
            return Ok(Some((info, messages)));
        }
        let records = self.store().tracking_records(self.user(), None, SHOWN_RECORDS).await?;
        Ok(Some(tracking_folder::tracking_folder(info, &records, self.hostname())))
    }

    /// The folder's stamp now (one row or two, not the folder): None when it is gone.
    pub async fn folder_stamp(&mut self, name: &str) -> Result<Option<FolderStamp>, StoreError> {
        let Some(version) = self.store().folder_version(self.user(), name).await? else { return Ok(None) };
        let newest_record = if folders::is_tracking(name) {
            // The newest one: `limit` keeps the newest.
            self.store().tracking_records(self.user(), None, 1).await?.first().map(|r| r.id)
        } else {
            None
        };
        Ok(Some(FolderStamp { version, newest_record }))
    }

    /// The account's tracking records by id (the entry ids of the Tracking folder's
    /// messages), for reading several messages of the folder at once.
    pub async fn tracking_records(&mut self) -> Result<HashMap<i64, StoredTrackingRecord>, StoreError> {
        let records = self.store().tracking_records(self.user(), None, SHOWN_RECORDS).await?;
        Ok(records.into_iter().map(|r| (r.id, r)).collect())
    }

    pub fn hostname(&self) -> &str {
        &self.context.session_config.hostname
    }
}
