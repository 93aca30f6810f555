"""HTTP interfaces: the REST API, operational endpoints and error mapping."""
