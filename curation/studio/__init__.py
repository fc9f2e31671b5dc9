"""Label Studio round trip: the local server, the generated labeling config, push, pull and simulated reviewers."""
