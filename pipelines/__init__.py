"""KFP pipelines, compiled per preset (`cloudml compile --pipeline <preset>`)."""
