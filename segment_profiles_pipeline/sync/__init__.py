"""profile_sync: plan in the warehouse, build Segment payloads, deliver, record acknowledgements."""
