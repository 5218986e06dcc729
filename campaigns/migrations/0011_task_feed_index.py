from django.db import migrations, models


class Migration(migrations.Migration):
    """The feeder reads "pending tasks of campaign C with id > N, in id order, first 5,000":
    PostgreSQL's (campaign, state) index finds them but sorts all the campaign's pending ids
    for every batch; (campaign, state, id) hands them over in order."""

    dependencies = [
        ('campaigns', '0010_task_lost_in_redis'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='task',
            index=models.Index(fields=['campaign', 'state', 'id'], name='task_campaign_state_id'),
        ),
    ]
