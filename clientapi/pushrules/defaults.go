package pushrules

// Server-default rule IDs (Client-Server API, "Predefined Rules").
const (
	RuleMaster                = ".m.rule.master"
	RuleSuppressNotices       = ".m.rule.suppress_notices"
	RuleInviteForMe           = ".m.rule.invite_for_me"
	RuleMemberEvent           = ".m.rule.member_event"
	RuleIsUserMention         = ".m.rule.is_user_mention"
	RuleContainsDisplayName   = ".m.rule.contains_display_name"
	RuleIsRoomMention         = ".m.rule.is_room_mention"
	RuleRoomNotif             = ".m.rule.roomnotif"
	RuleTombstone             = ".m.rule.tombstone"
	RuleReaction              = ".m.rule.reaction"
	RuleServerACL             = ".m.rule.room.server_acl"
	RuleSuppressEdits         = ".m.rule.suppress_edits"
	RuleContainsUserName      = ".m.rule.contains_user_name"
	RuleCall                  = ".m.rule.call"
	RuleEncryptedRoomOneToOne = ".m.rule.encrypted_room_one_to_one"
	RuleRoomOneToOne          = ".m.rule.room_one_to_one"
	RuleMessage               = ".m.rule.message"
	RuleEncrypted             = ".m.rule.encrypted"

	// MSC3930 poll rules (unstable IDs, as Synapse serves them): poll
	// responses are silent; poll starts and ends notify like messages.
	RulePollResponse      = ".org.matrix.msc3930.rule.poll_response"
	RulePollStartOneToOne = ".org.matrix.msc3930.rule.poll_start_one_to_one"
	RulePollStart         = ".org.matrix.msc3930.rule.poll_start"
	RulePollEndOneToOne   = ".org.matrix.msc3930.rule.poll_end_one_to_one"
	RulePollEnd           = ".org.matrix.msc3930.rule.poll_end"
	pollStartType         = "org.matrix.msc3381.poll.start"
	pollResponseType      = "org.matrix.msc3381.poll.response"
	pollEndType           = "org.matrix.msc3381.poll.end"
)

// isLegacyMentionRule reports whether id is one of the body-based mention rules
// that do not apply to events carrying m.mentions (Client-Server API, "User and
// room mentions": "those push rules were disabled if the m.mentions field was
// present"). Spec v1.17 drops them; Hearth serves v1.16, which has them.
func isLegacyMentionRule(id string) bool {
	return id == RuleContainsDisplayName || id == RuleContainsUserName || id == RuleRoomNotif
}

var (
	soundDefault = SetTweak("sound", "default")
	soundRing    = SetTweak("sound", "ring")
	highlight    = SetTweak("highlight", nil)
)

func defaultRule(kind Kind, id string, conds []Condition, actions ...Action) *Rule {
	if actions == nil {
		actions = []Action{}
	}
	return &Rule{Kind: kind, RuleID: id, Default: true, Enabled: true, Conditions: conds, Actions: actions}
}

// Defaults returns the server-default rules for a user, as spec v1.16 defines
// them plus MSC3930's poll rules, each kind in priority order. localpart is the user's localpart (the
// contains_user_name pattern).
func Defaults(userID, localpart string) *Ruleset {
	master := defaultRule(Override, RuleMaster, []Condition{})
	master.Enabled = false
	contains := defaultRule(Content, RuleContainsUserName, nil, Notify, soundDefault, highlight)
	contains.Pattern = localpart
	return &Ruleset{
		Override: []*Rule{
			master,
			defaultRule(Override, RuleSuppressNotices, []Condition{EventMatch("content.msgtype", "m.notice")}),
			defaultRule(Override, RuleInviteForMe, []Condition{
				EventMatch("type", "m.room.member"),
				EventMatch("content.membership", "invite"),
				EventMatch("state_key", userID),
			}, Notify, soundDefault),
			defaultRule(Override, RuleMemberEvent, []Condition{EventMatch("type", "m.room.member")}),
			defaultRule(Override, RuleIsUserMention, []Condition{
				PropertyContains(`content.m\.mentions.user_ids`, Value{Type: StringValue, Str: userID}),
			}, Notify, soundDefault, highlight),
			defaultRule(Override, RuleContainsDisplayName, []Condition{ContainsDisplayName()}, Notify, soundDefault, highlight),
			defaultRule(Override, RuleIsRoomMention, []Condition{
				PropertyIs(`content.m\.mentions.room`, Value{Type: BoolValue, Bool: true}),
				SenderPermission("room"),
			}, Notify, highlight),
			defaultRule(Override, RuleRoomNotif, []Condition{
				EventMatch("content.body", "@room"),
				SenderPermission("room"),
			}, Notify, highlight),
			defaultRule(Override, RuleTombstone, []Condition{
				EventMatch("type", "m.room.tombstone"),
				EventMatch("state_key", ""),
			}, Notify, highlight),
			defaultRule(Override, RuleReaction, []Condition{EventMatch("type", "m.reaction")}),
			defaultRule(Override, RuleServerACL, []Condition{
				EventMatch("type", "m.room.server_acl"),
				EventMatch("state_key", ""),
			}),
			defaultRule(Override, RuleSuppressEdits, []Condition{
				PropertyIs(`content.m\.relates_to.rel_type`, Value{Type: StringValue, Str: "m.replace"}),
			}),
			defaultRule(Override, RulePollResponse, []Condition{EventMatch("type", pollResponseType)}),
		},
		Content: []*Rule{contains},
		Underride: []*Rule{
			defaultRule(Underride, RuleCall, []Condition{EventMatch("type", "m.call.invite")}, Notify, soundRing),
			defaultRule(Underride, RuleEncryptedRoomOneToOne, []Condition{
				MemberCount("2"),
				EventMatch("type", "m.room.encrypted"),
			}, Notify, soundDefault),
			defaultRule(Underride, RuleRoomOneToOne, []Condition{
				MemberCount("2"),
				EventMatch("type", "m.room.message"),
			}, Notify, soundDefault),
			// MSC3930: each one-to-one rule ranks above its any-room counterpart.
			defaultRule(Underride, RulePollStartOneToOne, []Condition{
				MemberCount("2"),
				EventMatch("type", pollStartType),
			}, Notify, soundDefault),
			defaultRule(Underride, RulePollStart, []Condition{EventMatch("type", pollStartType)}, Notify),
			defaultRule(Underride, RulePollEndOneToOne, []Condition{
				MemberCount("2"),
				EventMatch("type", pollEndType),
			}, Notify, soundDefault),
			defaultRule(Underride, RulePollEnd, []Condition{EventMatch("type", pollEndType)}, Notify),
			defaultRule(Underride, RuleMessage, []Condition{EventMatch("type", "m.room.message")}, Notify),
			defaultRule(Underride, RuleEncrypted, []Condition{EventMatch("type", "m.room.encrypted")}, Notify),
		},
	}
}
