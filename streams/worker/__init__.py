"""The Faust runtime: the app, its consumer, agents' batches, table store, model watcher, topics."""
