"""The collector's parts, one idea each (docs/pipeline.md, "Collecting"):

- envelopes: reading a bounded batch off the results lists and checking each envelope at the
  door (size, nesting depth, finite numbers, attribution to a task's delivery);
- outcomes: what one checked result does to its task (values, kept files, ledger fields);
- store_writes: kept files to storage and values to the record store, with outages told
  apart from refusals;
- ledger_writes: the ledger's conditional updates, the rollup and finished campaigns;
- retries: the per-dataset retry lists of results whose store or storage is down;
- rq_cleanup: worker names read from rq's job hashes, and what rq keeps of finished jobs;
- dead_letters and host_faults: bounded records of refused envelopes and of broken nodes,
  with their selectors.

campaigns.services.collecting.results_collect puts them together.
"""
