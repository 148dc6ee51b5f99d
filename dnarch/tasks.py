"""The tasks a network can learn, spelled once: a label per sample ('classify'), a label per position
('segment'), or values per position ('regress')."""

TASKS = ("classify", "segment", "regress")
