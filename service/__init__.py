"""The service core shared by the API and the workers: settings, database and models, the blob store,
the queue and Celery configuration, pools, reconciliation, keys, quotas and the data functions. It imports
no web framework (api/ maps its domain errors to HTTP) and never imports api/ or worker/ at run time."""
