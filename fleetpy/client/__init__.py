"""The client library: what the CLI's verbs (and fleet's API) do, with no printing and no
argument parsing; it never imports the CLI.

- arguments: unit files read and checked, names and globs of submitted units
- verbs: submit/load/start/stop/unload as one table (state, wait target, --replace rule)
- plans: arguments into validated unit changes, before anything is written
- operations: plan then write (the verbs, destroy, cat's text, the API's put and delete)
- waiting: where units stand against a verb's target, and the blocking wait
- listings: the rows of list-unit-files, list-units and list-machines
"""
