//! Sagas (transfer, purchase, mint, notify): driven from Postgres, woken by JetStream.
//! Not built yet: the ledger-flows issue (transfers, purchases) brings the first ones.
