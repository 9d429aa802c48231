"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 23:21:57.282190
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('incidents',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=64), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('resource_id', sa.String(length=512), nullable=False),
    sa.Column('resource_name', sa.String(length=512), nullable=False),
    sa.Column('resource_type', sa.String(length=128), nullable=False),
    sa.Column('event_count', sa.Integer(), nullable=False),
    sa.Column('first_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_event_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_incidents'))
    )
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.create_index('ix_incidents_fingerprint_resolved_at', ['fingerprint', 'resolved_at'], unique=False)
        batch_op.create_index('ix_incidents_last_event_at', ['last_event_at'], unique=False)
        batch_op.create_index('ix_incidents_status_last_event_at', ['status', 'last_event_at'], unique=False)
        batch_op.create_index('uq_incidents_open_fingerprint', ['fingerprint'], unique=True, sqlite_where=sa.text("status IN ('triggered', 'acknowledged')"), postgresql_where=sa.text("status IN ('triggered', 'acknowledged')"))

    op.create_table('raw_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=64), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('headers', sa.JSON(), nullable=False),
    sa.Column('body', sa.LargeBinary(), nullable=False),
    sa.Column('content_type', sa.String(length=255), nullable=True),
    sa.Column('remote_addr', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('alert_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_raw_requests'))
    )
    with op.batch_alter_table('raw_requests', schema=None) as batch_op:
        batch_op.create_index('ix_raw_requests_received_at', ['received_at'], unique=False)
        batch_op.create_index('ix_raw_requests_source_key_id', ['source_key', 'id'], unique=False)
        batch_op.create_index('uq_raw_requests_source_key_external_id', ['source_key', 'external_id'], unique=True)

    op.create_table('sources',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('options', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_sources'))
    )
    op.create_table('alerts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('raw_request_id', sa.Integer(), nullable=True),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=64), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('external_id', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('resource_id', sa.String(length=512), nullable=False),
    sa.Column('resource_name', sa.String(length=512), nullable=False),
    sa.Column('resource_type', sa.String(length=128), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('labels', sa.JSON(), nullable=False),
    sa.Column('origin', sa.String(length=16), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_alerts_incident_id_incidents')),
    sa.ForeignKeyConstraint(['raw_request_id'], ['raw_requests.id'], name=op.f('fk_alerts_raw_request_id_raw_requests'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_incident_id', ['incident_id'], unique=False)
        batch_op.create_index('ix_alerts_raw_request_id', ['raw_request_id'], unique=False)

    op.create_table('handshakes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source_key', sa.String(length=64), nullable=False),
    sa.Column('raw_request_id', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('record', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['raw_request_id'], ['raw_requests.id'], name=op.f('fk_handshakes_raw_request_id_raw_requests'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handshakes'))
    )
    with op.batch_alter_table('handshakes', schema=None) as batch_op:
        batch_op.create_index('ix_handshakes_source_key_id', ['source_key', 'id'], unique=False)

    op.create_table('timeline_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('raw_request_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], name=op.f('fk_timeline_entries_incident_id_incidents')),
    sa.ForeignKeyConstraint(['raw_request_id'], ['raw_requests.id'], name=op.f('fk_timeline_entries_raw_request_id_raw_requests'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_timeline_entries'))
    )
    with op.batch_alter_table('timeline_entries', schema=None) as batch_op:
        batch_op.create_index('ix_timeline_entries_incident_id_id', ['incident_id', 'id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('alert_id', sa.Integer(), nullable=False),
    sa.Column('sink_name', sa.String(length=64), nullable=False),
    sa.Column('ordering_key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_deliveries_alert_id_alerts')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_sink_name_ordering_key_status', ['sink_name', 'ordering_key', 'status'], unique=False)
        batch_op.create_index('ix_deliveries_sink_name_status_next_attempt_at', ['sink_name', 'status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_status', ['status'], unique=False)

    op.create_table('delivery_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('delivery_id', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['deliveries.id'], name=op.f('fk_delivery_attempts_delivery_id_deliveries')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_delivery_attempts'))
    )
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_attempts_delivery_id', ['delivery_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('delivery_attempts', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_attempts_delivery_id')

    op.drop_table('delivery_attempts')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_status')
        batch_op.drop_index('ix_deliveries_sink_name_status_next_attempt_at')
        batch_op.drop_index('ix_deliveries_sink_name_ordering_key_status')

    op.drop_table('deliveries')
    with op.batch_alter_table('timeline_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_timeline_entries_incident_id_id')

    op.drop_table('timeline_entries')
    with op.batch_alter_table('handshakes', schema=None) as batch_op:
        batch_op.drop_index('ix_handshakes_source_key_id')

    op.drop_table('handshakes')
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_raw_request_id')
        batch_op.drop_index('ix_alerts_incident_id')

    op.drop_table('alerts')
    op.drop_table('sources')
    with op.batch_alter_table('raw_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_raw_requests_source_key_external_id')
        batch_op.drop_index('ix_raw_requests_source_key_id')
        batch_op.drop_index('ix_raw_requests_received_at')

    op.drop_table('raw_requests')
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('uq_incidents_open_fingerprint', sqlite_where=sa.text("status IN ('triggered', 'acknowledged')"), postgresql_where=sa.text("status IN ('triggered', 'acknowledged')"))
        batch_op.drop_index('ix_incidents_status_last_event_at')
        batch_op.drop_index('ix_incidents_last_event_at')
        batch_op.drop_index('ix_incidents_fingerprint_resolved_at')

    op.drop_table('incidents')
