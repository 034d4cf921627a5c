"""Background work on networks: invitation emails."""

from __future__ import annotations

import logging

from django.core.mail import send_mail
from django.db import transaction
from django.utils import timezone

from netsody_controller.celery import app
from netsody_controller.networks.models import Invitation

logger = logging.getLogger(__name__)

# Retries with exponential backoff (2, 4, 8, ... s, capped at 10 min) when the mail server fails.
MAX_RETRIES = 8


@app.task(bind=True, max_retries=MAX_RETRIES, acks_late=True)
def send_invitation_task(self, invitation_id: str) -> bool:
    """Send the email of an invitation once. Running it again for a sent invitation does nothing."""
    with transaction.atomic():
        invitation = (
            # NOTE: `of=("self",)` locks only the invitation row. PostgreSQL rejects FOR UPDATE
            # on the nullable side of the outer join that `invited_by` needs.
            Invitation.objects.select_for_update(of=("self",))
            .select_related("network", "invited_by")
            .filter(id=invitation_id)
            .first()
        )
        if invitation is None or invitation.email_sent_at or invitation.revoked_at:
            return False
        inviter = invitation.invited_by.email if invitation.invited_by else "An administrator"
        try:
            send_mail(
                subject=f"Invitation to the Netsody network {invitation.network.name}",
                message=_invitation_text(invitation, inviter),
                from_email=None,
                recipient_list=[invitation.email],
            )
        except OSError as error:
            logger.warning(
                "sending an invitation email failed. Retrying",
                extra={"invitation_id": invitation_id, "error": str(error)},
            )
            raise self.retry(
                exc=error, countdown=min(600, 2 ** (self.request.retries + 1))
            ) from error
        invitation.email_sent_at = timezone.now()
        invitation.save(update_fields=["email_sent_at"])
    logger.info("invitation email sent", extra={"invitation_id": invitation_id})
    return True


def _invitation_text(invitation: Invitation, inviter: str) -> str:
    text = (
        f"{inviter} invited you to the Netsody network {invitation.network.name} "
        f"as {invitation.role}. Sign in to the controller to accept it."
    )
    if invitation.enrollment_url:
        text += f"\n\nCreate your account first: {invitation.enrollment_url}"
    return text
