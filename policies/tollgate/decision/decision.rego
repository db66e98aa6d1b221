# METADATA
# title: Tollgate decision
# description: |
#   The entrypoint (data.tollgate.decision). Its document is the decision:
#   {"actions": [...], "shadow": false}, so this package defines nothing
#   else. Exempt subjects get only what tollgate.exemptions asks for;
#   verified customers get a review of what would have been done
#   (tollgate.review_first); everyone else gets the graduated response, the
#   operation-level response and shared-intel blocks, less what a cool-down
#   after a lift holds back (tollgate.cooldown). Every action passes the
#   tollgate.contract guard first.
# entrypoint: true
# custom:
#   owner: policy-platform
package tollgate.decision

import data.tollgate.contract
import data.tollgate.cooldown
import data.tollgate.exemptions
import data.tollgate.review_first

# METADATA
# title: actions
# description: The actions this verdict calls for; always defined, empty when nothing fires.
# custom:
#   owner: policy-platform
actions := contract.enforceable(exemptions.actions) if {
	exemptions.exempt
} else := contract.enforceable(review_first.actions) if {
	review_first.applies
} else := contract.enforceable(cooldown.allowed | cooldown.held_back)

# METADATA
# title: shadow
# description: These rules are live; a shadow-mode policy set would return true so actions are recorded, never applied.
# custom:
#   owner: policy-platform
shadow := false
