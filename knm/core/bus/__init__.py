"""The message bus: a protocol, an in-memory implementation and one on Kafka."""
