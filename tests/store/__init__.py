"""Tests against a database and no daemon: store verbs, SQL functions, migrations, chores'
single passes called directly."""
