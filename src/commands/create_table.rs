//! `lock-exec create-table`: the table (partition key `key`, type S, on-demand) with TTL
//! on `ttl`. Idempotent: an existing table with the right schema is fine.

use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification,
};

use crate::error::Error;
use crate::exit::Outcome;
use crate::lock::dynamo::{classify, DynamoStore};
use crate::lock::StoreError;

/// How long to wait for a new table to become ACTIVE.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(120);

/// Creates the table and turns on TTL.
pub(super) async fn create_table(store: &DynamoStore) -> Result<Outcome, Error> {
    let client = store.client();
    let table = store.table();
    let res = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("key")
                .key_type(KeyType::Hash)
                .build()
                .expect("name and type are set"),
        )
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("key")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("name and type are set"),
        )
        .send()
        .await;
    match res {
        Ok(_) => tracing::info!(table, "table created"),
        Err(e) if e.as_service_error().and_then(|s| s.code()) == Some("ResourceInUseException") => {
            tracing::info!(table, "table already exists")
        }
        Err(e) => return Err(classify(e, table, "CreateTable").into()),
    }

    // Wait for ACTIVE, and check the schema of a table we did not create.
    let started = tokio::time::Instant::now();
    loop {
        let out = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| classify(e, table, "DescribeTable"))?;
        let desc = out.table();
        let schema = desc.map(|d| d.key_schema()).unwrap_or_default();
        let attrs = desc.map(|d| d.attribute_definitions()).unwrap_or_default();
        let key_ok = schema.len() == 1
            && schema[0].attribute_name() == "key"
            && schema[0].key_type() == &KeyType::Hash
            && attrs.iter().any(|a| {
                a.attribute_name() == "key" && a.attribute_type() == &ScalarAttributeType::S
            });
        if !key_ok {
            return Err(StoreError::KeySchema {
                table: table.to_string(),
                detail: "found a different key schema".into(),
            }
            .into());
        }
        if desc.and_then(|d| d.table_status()) == Some(&TableStatus::Active) {
            break;
        }
        if started.elapsed() > ACTIVE_TIMEOUT {
            return Err(Error::TableNotActive(table.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("ttl")
        .enabled(true)
        .build()
        .expect("name and flag are set");
    match client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
    {
        Ok(_) => tracing::info!(table, attribute = "ttl", "TTL enabled"),
        Err(e) => {
            let code = e
                .as_service_error()
                .and_then(|s| s.code())
                .unwrap_or_default()
                .to_string();
            let msg = e
                .as_service_error()
                .and_then(|s| s.message())
                .unwrap_or_default()
                .to_string();
            if msg.contains("already enabled") {
                tracing::info!(table, attribute = "ttl", "TTL already enabled");
            } else if code == "UnknownOperationException" || code.is_empty() && msg.is_empty() {
                tracing::warn!(table, "this server has no TTL API; old lock items will not be cleaned up automatically");
            } else if code == "AccessDeniedException" {
                return Err(classify(e, table, "UpdateTimeToLive").into());
            } else {
                tracing::warn!(
                    table,
                    code,
                    message = msg,
                    "could not enable TTL; old lock items will not be cleaned up automatically"
                );
            }
        }
    }
    Ok(Outcome::Done)
}
