"""Plans: changes proposed for Stash scenes, reviewed by a person, applied by plan_applier."""
