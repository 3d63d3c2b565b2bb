"""Submit rrsis jobs to a running Ray cluster (Ray Jobs API) and follow them: `rrsis submit`, `rrsis jobs`.

`client` holds the CLI glue, `connection` the address/auth/reachability checks, `package` what travels
with a job (config, entrypoint, runtime_env), `control` status/logs/stop/list.
"""
