from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="user",
            name="picture_key",
            field=models.CharField(blank=True, max_length=255),
        ),
        migrations.AddField(
            model_name="user",
            name="picture_content_type",
            field=models.CharField(blank=True, max_length=64),
        ),
        migrations.AddField(
            model_name="user",
            name="picture_source",
            field=models.CharField(blank=True, max_length=2048),
        ),
        migrations.AddField(
            model_name="user",
            name="picture_updated_at",
            field=models.DateTimeField(null=True),
        ),
    ]
