# METADATA
# title: Tollgate decision
# description: |
#   The entrypoint (data.tollgate.decision). Its document is the decision:
#   {"actions": [...], "shadow": false}, so this package defines nothing
#   else. Exempt subjects get only what tollgate.exemptions asks for;
#   everyone else gets the graduated response plus shared-intel blocks.
#   Every action passes the tollgate.contract guard first.
# entrypoint: true
# custom:
#   owner: policy-platform
package tollgate.decision

import data.tollgate.contract
import data.tollgate.cooldown
import data.tollgate.exemptions

# METADATA
# title: actions
# description: The actions this verdict calls for; always defined, empty when nothing fires.
# custom:
#   owner: policy-platform
actions := contract.enforceable(exemptions.actions) if {
	exemptions.exempt
} else := contract.enforceable(cooldown.allowed | cooldown.held_back)

# METADATA
# title: shadow
# description: These rules are live; a shadow-mode policy set would return true so actions are recorded, never applied.
# custom:
#   owner: policy-platform
shadow := false
